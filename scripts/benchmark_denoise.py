"""How the seasonal anchor scores with and without cross-site denoising, at several forecast origins.

The anchor is what the untrained model forecasts (its head starts at zero): demand one season
earlier, smoothed 1/4·1/2·1/4 outside holidays (``common.windows._seasonal_lag``), shifted by a
share (``common.model.SHIFT_SHRINK``) of how much the last 13 weeks differ from the same weeks a
year before. This script computes it on the raw Walmart file, once from each store's own history
and once with the lag taken from the history denoised by ``common.denoise`` (every store a site,
departments as groups; the moments are summed in plaintext here: encryption changes them by less
than 1e-5, see tests/federation/test_cross_site_denoising.py). WMAE with holiday weeks ×5 over the 13 weeks
after each origin. The settings of the Walmart preset and the share of the shift were chosen on
the origins before the benchmark window; the benchmark origin (2012-04-27) is shown, not used to
choose.

    .venv/bin/python scripts/benchmark_denoise.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.denoise import DenoiseSettings, Profile, SiteHistory, grid_dates
from common.evaluation import write_marked_section
from common.model import RECENT, SEASONAL_RECENT, SHIFT_SHRINK
from common.network import group_label
from common.windows import _seasonal_lag
from coordinator.planner.simulate import PRESETS

ROOT = Path(__file__).resolve().parents[1]
EARLIER = ("2011-05-27", "2011-07-29", "2011-09-30", "2011-10-28", "2011-11-18", "2012-01-27")
BENCHMARK_ORIGIN = "2012-04-27"
HORIZON, LAG, FREQ = 13, 52, "W-FRI"
GRID = [(rank, shrink) for rank in (5, 10, 15) for shrink in (0.3, 0.5, 0.7)]
SHIFT_SHARES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # share of this year's shift the anchor adds
SEASON_BLENDS = (0.2, 0.3, 0.5)  # share of two seasons earlier in the lag (only 2012-01-27 and later have it)


def anchor(
    y: np.ndarray,
    lag_source: np.ndarray,
    holiday: np.ndarray,
    shrink: float = SHIFT_SHRINK,
    blend: float = 0.0,
) -> np.ndarray:
    """The seasonal anchor of one series (weeks in order, NaN = unobserved) for the next 13 weeks;
    ``shrink`` is the share of this year's shift that it adds, ``blend`` the share of two seasons
    earlier in its lag (``common.windows``)."""
    n = len(y)
    observed = np.isfinite(np.append(y, np.full(HORIZON, np.nan))).astype(np.float32)
    source = np.nan_to_num(np.append(lag_source, np.zeros(HORIZON)))
    lag = _seasonal_lag(source, observed, holiday, LAG, HORIZON, blend)
    seen, yy = observed[:n], np.nan_to_num(y)
    both = seen[-SEASONAL_RECENT:] * lag[n - SEASONAL_RECENT : n, 1]
    gap = ((yy[-SEASONAL_RECENT:] - lag[n - SEASONAL_RECENT : n, 0]) * both).sum() / max(both.sum(), 1.0)
    shift = shrink * gap if both.sum() >= SEASONAL_RECENT / 2 else 0.0
    w = seen[-RECENT:]
    level = (yy[-RECENT:] * w).sum() / max(w.sum(), 1.0)
    return np.where(lag[n:, 1] > 0, lag[n:, 0] + shift, level)


def forecasts(
    sales: pd.DataFrame,
    origin: pd.Timestamp,
    s: DenoiseSettings | None,
    shrink: float = SHIFT_SHRINK,
    blend: float = 0.0,
) -> pd.DataFrame:
    dates = pd.DatetimeIndex(sorted(sales["Date"].unique()))
    past, horizon = dates[dates <= origin], dates[dates > origin][:HORIZON]
    holiday = sales.groupby("Date")["IsHoliday"].max().reindex(dates).to_numpy(dtype=np.float32)
    holiday = holiday[: len(past) + HORIZON]
    history = sales[sales["Date"] <= origin].rename(columns={"Date": "date", "Weekly_Sales": "demand"})
    history = history.assign(series=history["Dept"].map(group_label))
    history["source"] = history["demand"]
    if s is not None:  # every store a site; the moments summed in plaintext
        grid = grid_dates(origin, s.periods, FREQ)
        sites = []
        for _, frame in history.groupby("Store"):
            labels = pd.Series(frame["series"].unique(), index=frame["series"].unique())
            scale = frame.groupby("series")["demand"].mean()
            sites.append((frame.index, labels, SiteHistory.of(frame, scale, labels, s, grid)))
        counts = sum(h.site_groups(len(s.groups)) for *_, h in sites)
        profile = Profile.from_moments(sum(h.moments(s, counts) for *_, h in sites), s, origin, FREQ, "sum")
        for rows, labels, _ in sites:
            history.loc[rows, "source"] = profile.apply(history.loc[rows], labels)
    wide = history.pivot_table(index=["Store", "Dept"], columns="date", values=["demand", "source"])
    y, source = wide["demand"].reindex(columns=past), wide["source"].reindex(columns=past)
    pairs = zip(y.to_numpy(), source.to_numpy(), strict=True)
    fc = np.stack([anchor(a, b, holiday, shrink, blend) for a, b in pairs])
    out = pd.DataFrame(fc, index=y.index, columns=horizon).stack().rename("fc").reset_index()
    return out.rename(columns={"level_2": "Date", "date": "Date"})


def wmae(sales: pd.DataFrame, fc: pd.DataFrame) -> float:
    actual = sales.merge(fc, on=["Store", "Dept", "Date"], how="inner")
    if not np.isfinite(actual["fc"]).all():
        raise SystemExit(f"{int((~np.isfinite(actual['fc'])).sum())} forecasts are not finite")
    weight = np.where(actual["IsHoliday"], 5.0, 1.0)
    return float((weight * (actual["Weekly_Sales"] - actual["fc"]).abs()).sum() / weight.sum())


@click.command()
@click.option("--data-root", default=str(ROOT.parent / "shared" / "data"), show_default=True)
def main(data_root: str) -> None:
    sales = pd.read_parquet(Path(data_root) / "walmart" / "sales.parquet")
    sales["Date"] = pd.to_datetime(sales["Date"])
    preset = PRESETS["walmart"]
    groups = tuple(sorted(sales["Dept"].map(group_label).unique(), key=lambda v: (len(v), v)))

    def settings(rank: int, shrink: float) -> DenoiseSettings:
        return DenoiseSettings(
            rank, shrink, int(preset["denoise-periods"]), int(preset["denoise-min-sites"]), "Dept", groups
        )

    chosen = (int(preset["denoise-rank"]), float(preset["denoise-shrink"]))
    blend = float(preset["season-blend"])
    # (denoising, share of the shift, share of two seasons earlier): the denoising grid with the
    # model's SHIFT_SHRINK, the share swept with the preset's denoising, then the two-season blend
    variants = {f"own history (no denoising), shift × {SHIFT_SHRINK}": (None, SHIFT_SHRINK, 0.0)}
    variants |= {
        f"rank {r}, shrink {k}{' (preset)' if (r, k) == chosen else ''}, shift × {SHIFT_SHRINK}": (
            settings(r, k),
            SHIFT_SHRINK,
            0.0,
        )
        for r, k in GRID
    }
    variants |= {
        f"preset denoising, shift × {a}": (settings(*chosen), a, 0.0)
        for a in SHIFT_SHARES
        if a != SHIFT_SHRINK
    }
    variants |= {
        f"preset denoising, shift × {SHIFT_SHRINK}, two seasons × {b}{' (preset)' if b == blend else ''}": (
            settings(*chosen),
            SHIFT_SHRINK,
            b,
        )
        for b in SEASON_BLENDS
    }
    variants[f"own history, shift × {SHIFT_SHRINK}, two seasons × {blend}"] = (None, SHIFT_SHRINK, blend)
    results: dict[str, list[float]] = {}
    started = time.monotonic()
    for name, (s, share, b) in variants.items():
        results[name] = [
            wmae(sales, forecasts(sales, pd.Timestamp(o), s, share, b)) for o in (*EARLIER, BENCHMARK_ORIGIN)
        ]
        print(name, [round(v, 1) for v in results[name]], flush=True)
    base = np.array(next(iter(results.values()))[: len(EARLIER)])
    head = [
        "lag taken from",
        *EARLIER,
        "mean of earlier",
        "earlier origins better",
        f"{BENCHMARK_ORIGIN} (benchmark)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, values in results.items():
        earlier = np.array(values[: len(EARLIER)])
        cells = [name, *(f"{v:.1f}" for v in earlier), f"{earlier.mean():.1f}"]
        cells += [f"{int((earlier < base).sum())} of {len(EARLIER)}", f"{values[-1]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    body = [
        "## Cross-site denoising of last season (the seasonal anchor alone)",
        "",
        f"Written by `scripts/benchmark_denoise.py` on {time.strftime('%Y-%m-%d')} in "
        f"{time.monotonic() - started:.0f} s. Command: `.venv/bin/python scripts/benchmark_denoise.py`. "
        "Raw Walmart file, 45 stores as sites, departments as groups, grid of "
        f"{preset['denoise-periods']} weeks, groups shared when at least {preset['denoise-min-sites']} "
        "stores hold them. WMAE (holiday weeks ×5) of the seasonal anchor (what the untrained model "
        "forecasts) over the 13 weeks after each origin.",
        "",
        *lines,
    ]
    write_marked_section(ROOT / "BENCHMARKS.md", "denoise", body)


if __name__ == "__main__":
    main()
