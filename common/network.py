"""The network's demand without any site's: per-site forecast totals, summed exactly under CKKS.

Each node turns its own forecast into cells, one per (group, period, quantity):

* ``mean``: the sum of its series' mean forecasts;
* ``var_series``: Σ sdᵢ², the variance of that sum if its series' errors were independent;
* ``var_site``: (Σ sdᵢ)², the variance if they moved together (one store's departments share its
  traffic, weather and local events);
* ``sd_site``: Σ sdᵢ, so that the planner can also add sites as if they moved together;

with sdᵢ = (q90 − q10) / 2.563 of each series and period (the calibrated forecast interval), plus
the site's errors on its hold-out window (``holdout_cells``: its total's error per hold-out
period, split into positive and negative parts, and the mean square, root mean square and
forecast variance of that error), from which the planner calibrates the "calibrated" dependence
(``HoldoutSums``), and one ``sites`` cell holding 1. Summed over sites, the cells give the
network mean and its variance under four dependence assumptions (``DEPENDENCE``). Of the three
fixed ones only "network" did not under-cover on Walmart (BENCHMARKS.md, "network forecast"):
one global model errs the same way at every store; "calibrated" measures how much.

Exact sums. CKKS adds with an absolute error of about 2^12 / scale per addend, so one scale cannot
give both the range of a large retailer's dollar variances (10^12 and more) and a precision of 1e-6
on a small site's unit counts. Each value is written in fixed point with ``FRACTION_BITS`` and cut
into ``LIMBS`` base-2^24 digits; digit sums stay integers far below the CKKS bound, so the planner
rounds each decrypted digit sum to the nearest integer and rebuilds the exact fixed-point total.
A digit sum that is not close to an integer means a corrupt or wrapped sum and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

QUANTITIES = ("mean", "var_series", "var_site", "sd_site")
DEPENDENCE = {
    "series": "every series of every site independent",
    "site": "series of one site move together; sites independent",
    "network": "every series moves together",
    "calibrated": "sites correlated as much as their summed hold-out errors show",
}
MIN_SITES = 3  # no sum over fewer sites is ever sent, written or decrypted; a run may ask for more
DEFAULT_DEPENDENCE = "calibrated"  # "network" when a run has no hold-out errors to calibrate from
TOTAL, OTHER = "total", "other"
Z90 = 1.2815515655446004  # standard normal 0.9 quantile: (q90 - q10) / (2 Z90) is one sd
FRACTION_BITS = 24
DIGIT_BITS = 24
LIMBS = 3  # fraction + two integer digits: totals below 2^48 (2.8e14) at 6e-8 resolution
DIGIT_SCALE_BITS = 20  # CKKS scale of the digits: sum error ~2^-8·√sites, far below 0.5
MAX_VALUE = 2.0 ** (DIGIT_BITS * (LIMBS - 1))  # one site's value; the digit sums bound the total
FAN_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
HORIZON_FALLBACK = 0.5  # path_corr without hold-out errors to measure it: the node's replenish default
MIN_PAIRS = 3  # fewer pairs of consecutive errors than this measure no correlation along the horizon


class NetworkError(ValueError):
    """A network forecast that cannot be built or read."""


@dataclass(frozen=True)
class Layout:
    """Which cells a node's vector holds: agreed by the whole federation through the run config."""

    group_by: str  # "" = network total only; else a series key column (e.g. "Dept")
    groups: tuple[str, ...]  # the group values every site uses, in order ("total" first, "other" last)
    periods: int

    @classmethod
    def of(cls, group_by: str, listed: str | list[str], periods: int) -> Layout:
        values = [v.strip() for v in listed.split(",")] if isinstance(listed, str) else list(listed)
        values = [str(v) for v in values if str(v)]
        if group_by and not values:
            raise NetworkError(f"network-group {group_by!r} needs the list of its values (network-groups)")
        if len(set(values)) != len(values) or {TOTAL, OTHER} & set(values):
            raise NetworkError("network-groups must be distinct and must not be 'total' or 'other'")
        groups = (TOTAL, *values, OTHER) if group_by else (TOTAL,)
        return cls(group_by, groups, int(periods))

    @property
    def forecast_cells(self) -> int:
        return len(self.groups) * self.periods * len(QUANTITIES)

    @property
    def cells(self) -> int:
        return self.forecast_cells + 2 * self.periods + 3 + 1  # + the hold-out errors + the sites cell

    @property
    def length(self) -> int:
        return self.cells * LIMBS


def group_label(value: object) -> str:
    """How a group value is written in the layout: 7, 7.0 and "7" are the same department."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def series_sd(forecasts: pd.DataFrame) -> np.ndarray:
    if not {"q10", "q90"} <= set(forecasts.columns):
        raise NetworkError("forecasts have no q10 and q90 columns: the model must predict both")
    return np.clip((forecasts["q90"] - forecasts["q10"]).to_numpy(float), 0.0, None) / (2 * Z90)


def site_cells(
    forecasts: pd.DataFrame, layout: Layout, dates: list, holdout: pd.DataFrame | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """One site's cells from its forecast rows (date, mean, q10, q90 and the group column), and
    from ``holdout``: its forecast of its hold-out window with the actual demand (``actual``).

    Returns the flat cell vector and the same numbers as a table (kept by the node for audit)."""
    if len(dates) != layout.periods:
        raise NetworkError(f"{len(dates)} forecast periods, the network layout has {layout.periods}")
    frame = forecasts.assign(
        sd=series_sd(forecasts), period=forecasts["date"].map({d: i for i, d in enumerate(dates)})
    )
    if frame["period"].isna().any():
        raise NetworkError("forecast rows outside the network's periods")
    if layout.group_by and layout.group_by not in frame.columns:
        raise NetworkError(f"network-group {layout.group_by!r} is not a series key of this site")
    parts = [frame.assign(group=TOTAL)]
    if layout.group_by:
        named = frame[layout.group_by].map(group_label)
        parts.append(frame.assign(group=named.where(named.isin(layout.groups[1:-1]), OTHER)))
    rows = pd.concat(parts, ignore_index=True)
    rows["sd2"] = rows["sd"] ** 2
    agg = rows.groupby(["group", "period"]).agg(
        mean=("mean", "sum"), var_series=("sd2", "sum"), sd_site=("sd", "sum")
    )
    agg["var_site"] = agg["sd_site"] ** 2
    full = pd.MultiIndex.from_product([layout.groups, range(layout.periods)], names=["group", "period"])
    table = agg.reindex(full, fill_value=0.0)[list(QUANTITIES)]
    values = np.concatenate([table.to_numpy(float).ravel(), holdout_cells(holdout, layout.periods), [1.0]])
    table = table.reset_index()
    table["date"] = [dates[int(p)] for p in table["period"]]
    return values, table.drop(columns=["period"])


def holdout_cells(holdout: pd.DataFrame | None, periods: int) -> np.ndarray:
    """The site's hold-out terms of ``HoldoutSums``: its total's error in each hold-out period
    (positive part, then negative part: the digits carry no sign), then mean square, root mean
    square and mean forecast variance (Σ sdᵢ)². Zeros without a hold-out (the planner then falls
    back to "network")."""
    out = np.zeros(2 * periods + 3)
    if holdout is None or holdout.empty:
        return out
    rows = holdout.assign(sd=series_sd(holdout)).groupby("date")[["mean", "actual", "sd"]].sum().sort_index()
    error = (rows["actual"] - rows["mean"]).to_numpy(float)[:periods]
    out[: len(error)] = np.clip(error, 0, None)
    out[periods : periods + len(error)] = np.clip(-error, 0, None)
    square = float(np.mean(error**2))
    out[2 * periods :] = [square, np.sqrt(square), float(np.mean(rows["sd"].to_numpy(float)[:periods] ** 2))]
    return out


def to_digits(values: np.ndarray) -> np.ndarray:
    """Fixed-point digits of non-negative values, limb-major: [fraction..., units..., 2^24s...]."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)) or (v < 0).any():
        raise NetworkError("network totals must be finite and non-negative")
    if v.size and v.max() >= MAX_VALUE:
        raise NetworkError(f"a network total exceeds {MAX_VALUE:.4g}, the most a sum carries exactly")
    whole = np.floor(v)  # exact in float64: v < 2^48
    fraction = np.rint((v - whole) * 2.0**FRACTION_BITS)
    carry = fraction >= 2.0**FRACTION_BITS
    whole, fraction = whole + carry, np.where(carry, 0.0, fraction)
    base = 2.0**DIGIT_BITS
    digits = [fraction, np.mod(whole, base), np.floor(whole / base)]
    return np.concatenate(digits).astype(np.float64)


def from_digits(summed: np.ndarray, cells: int, tolerance: float = 0.25) -> np.ndarray:
    """Exact totals from the decrypted digit sums; refuse sums that are not near integers."""
    if len(summed) != cells * LIMBS:
        raise NetworkError(f"{len(summed)} digit sums, expected {cells * LIMBS}")
    whole = np.rint(summed)
    if (off := float(np.abs(summed - whole).max(initial=0.0))) > tolerance or (whole < 0).any():
        raise NetworkError(f"network sum is not exact (a digit is {off:.3f} off an integer): corrupt")
    limbs = whole.reshape(LIMBS, cells)
    return sum(limbs[k] * 2.0 ** (DIGIT_BITS * k) for k in range(LIMBS)) / 2.0**FRACTION_BITS


def network_table(
    totals: np.ndarray, layout: Layout, dates: list, dependence: str = DEFAULT_DEPENDENCE
) -> pd.DataFrame:
    """The planner's view: per group and period, mean, sd and normal quantiles (clipped at 0)."""
    if dependence not in DEPENDENCE:
        raise NetworkError(f"unknown dependence {dependence!r}: choose one of {', '.join(DEPENDENCE)}")
    cells = totals[: layout.forecast_cells].reshape(len(layout.groups), layout.periods, len(QUANTITIES))
    q = {name: cells[..., i] for i, name in enumerate(QUANTITIES)}
    rho, k = summed_holdout(totals, layout).dependence()
    sd = {
        "series": np.sqrt(q["var_series"]),
        "site": np.sqrt(q["var_site"]),
        "network": q["sd_site"],
        "calibrated": calibrated_sd(q["var_site"], q["sd_site"], rho, k),
    }
    out = pd.DataFrame(
        {
            "group": np.repeat(layout.groups, layout.periods),
            "date": np.tile(pd.to_datetime(dates), len(layout.groups)),
            "mean": q["mean"].ravel(),
            "sd": sd[dependence].ravel(),
            **{f"sd_{name}": value.ravel() for name, value in sd.items()},
        }
    )
    for level in FAN_LEVELS:  # the standard library's normal: the coordinator needs no torch
        z = NormalDist().inv_cdf(level)
        out[f"q{round(level * 100):02d}"] = np.clip(out["mean"] + z * out["sd"], 0.0, None)
    out["sites"] = round(totals[-1])
    out["dependence"] = dependence
    out["site_correlation"], out["variance_scale"] = rho, k  # what "calibrated" used
    along = summed_holdout(totals, layout).horizon_correlation()
    out["path_corr"] = HORIZON_FALLBACK if along is None else along  # how errors persist over periods
    return out


def summed_holdout(totals: np.ndarray, layout: Layout) -> HoldoutSums:
    """The hold-out terms of a network sum (``holdout_cells``, summed over sites)."""
    at, n = layout.forecast_cells, layout.periods
    terms = totals[at : at + 2 * n + 3]
    error = terms[:n] - terms[n : 2 * n]
    unseen = (terms[:n] == 0) & (terms[n : 2 * n] == 0)  # no site's hold-out reached this period
    return HoldoutSums(np.where(unseen, np.nan, error), *(float(v) for v in terms[2 * n :]))


@dataclass(frozen=True)
class HoldoutSums:
    """What each site computes from its own forecast errors on periods already observed, summed
    over sites (each term is one site's figure, so the sites can encrypt and add them):

    * ``network_error[t]``: Σ_s e_s,t, the error of the network total in period t (NaN: a period
      after every site's hold-out window);
    * ``squared``: Σ_s mean_t e_s,t², the sites' own error variances;
    * ``rms``: Σ_s sqrt(mean_t e_s,t²), their standard deviations;
    * ``predicted``: Σ_s mean_t var_site_s,t, the variance each site's forecast gave its total.
    """

    network_error: np.ndarray
    squared: float
    rms: float
    predicted: float

    def dependence(self) -> tuple[float, float]:
        """(ρ, k): ρ the correlation between sites' errors, from Var(Σ e) = Σσ² + ρ[(Σσ)² − Σσ²];
        k how much the sites' forecast variance must be scaled to match their errors."""
        seen = self.network_error[np.isfinite(self.network_error)]
        if not seen.size:
            return 1.0, 1.0
        network = float(np.mean(np.square(seen)))
        between = self.rms**2 - self.squared
        rho = (network - self.squared) / between if between > 0 else 1.0
        k = self.squared / self.predicted if self.predicted > 0 else 1.0
        return float(np.clip(rho, 0.0, 1.0)), float(k)

    def horizon_correlation(self) -> float | None:
        """How the network total's error persists from one hold-out period to the next."""
        return horizon_correlation(self.network_error[None, :])


def horizon_correlation(errors: np.ndarray) -> float | None:
    """The correlation of the network error between consecutive steps of one forecast, pooled over
    the forecasts' origins: errors [origins, steps], NaN where not yet seen. Not centred: a shared
    bias is exactly what persists along the horizon and widens the interval of a sum over periods.
    Clipped to [0, 0.99] (a few pairs never license errors that cancel); None below ``MIN_PAIRS``."""
    e = np.asarray(errors, dtype=float)
    now, after = e[:, :-1].ravel(), e[:, 1:].ravel()
    both = np.isfinite(now) & np.isfinite(after)
    now, after = now[both], after[both]
    scale = float(np.sqrt(np.sum(now**2) * np.sum(after**2)))
    if both.sum() < MIN_PAIRS or scale == 0.0:
        return None
    return float(np.clip(np.sum(now * after) / scale, 0.0, 0.99))


def calibrated_sd(var_site: np.ndarray, sd_site: np.ndarray, rho: float, k: float) -> np.ndarray:
    """Network sd from the summed cells under the calibrated dependence: ρ = 0 is "site", ρ = 1 is
    "network"; k rescales the sites' own variances."""
    var_site = np.asarray(var_site, dtype=float)
    return np.sqrt(k * (var_site + rho * (np.square(sd_site) - var_site)))
