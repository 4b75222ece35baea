"""Cross-site denoising of last season's demand: a few shapes per group, learned from a CKKS sum.

Why. The seasonal anchor (common/model.py) repeats each series' demand one season earlier, and one
store's department a year ago is a noisy guide to this year. The same department at other stores
shares most of its yearly shape. Projecting a site's history onto the ``rank`` shapes that the sites
of a group have in common, and shrinking the history towards that projection, removes noise that is
the site's own. The first-place entry of Kaggle's Walmart competition pooled stores the same way
(a reduced-rank SVD of each department's weeks × stores matrix; its author's forum post, "First
place entry"). Here no site shows its data: the projection needs only Σ z zᵀ over the group's
series of every site, which the coordinator adds as ciphertexts. Smoothing a series on its own
does not do it (it made the anchor worse); the gain comes from the other sites (BENCHMARKS.md,
"Cross-site denoising").

Protocol (each step a sum of ciphertexts; only key holders decrypt):

1. ``site_groups``: a site sends 1 for every group it holds; the sum counts the sites per group.
2. ``moments``: for every group that at least ``min_sites`` sites hold, a site sends Σ z zᵀ (upper
   triangle) over its series of the group, with z = demand / series mean on the last ``periods``
   periods (0 where unobserved; clipped at ±``Z_CLIP`` so one odd series cannot set the shapes),
   plus a 1 per group it added, so that every site can check how many sites a sum holds.
3. ``Profile.from_moments``: each site decrypts the sum and keeps the top ``rank`` eigenvectors of
   each group; ``Profile.apply`` replaces its history y by shrink·VVᵀy + (1 − shrink)·y, only as
   the source of the seasonal-lag input, never as a training target.

What a site learns: per group, the sum of the other sites' second moments (at least
``min_sites`` − 1 sites). THREAT_MODEL.md, "Cross-site denoising", says what that reveals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from common.files import replaced_atomically
from common.network import MIN_SITES, group_label

Z_CLIP = 20.0  # scaled demand beyond ±20× the series mean does not shape the basis
PROFILE_FILE = "denoise.npz"  # NODE/private: this run's shapes (derived from the network's sums)
# CKKS scale of the moments: the sum may reach 2^(56-2-28) = 2^26, 45 sites × Z_CLIP² × 3,700 series
# per group and site; its error, about 2^-16 per site, is far below what moves the shapes.
PROFILE_SCALE_BITS = 28


class DenoiseError(ValueError):
    """A cross-site profile that cannot be built, checked or applied."""


@dataclass(frozen=True)
class DenoiseSettings:
    """Chosen by the planner for the whole federation (run config ``denoise-*``)."""

    rank: int = 0  # shapes kept per group; 0 = off
    shrink: float = 0.5  # weight of the projection against the site's own history
    periods: int = 104  # the grid: the last periods up to the training cutoff
    min_sites: int = 5  # a group enters the sum only when this many sites hold it (floor MIN_SITES)
    group_by: str = ""  # the series key that groups series across sites (e.g. Dept)
    groups: tuple[str, ...] = ()  # its values, in the order every site uses

    def __post_init__(self) -> None:
        if not self.rank:
            return
        if not self.group_by or not self.groups:
            raise DenoiseError("denoise-rank needs network-group and network-groups (the groups to share)")
        if not 0 < self.rank < self.periods:
            raise DenoiseError(f"denoise-rank must be in 1..{self.periods - 1}, got {self.rank}")
        if not 0.0 < self.shrink <= 1.0:
            raise DenoiseError(f"denoise-shrink must be in (0, 1], got {self.shrink}")
        if self.min_sites < MIN_SITES:
            raise DenoiseError(f"denoise-min-sites must be at least {MIN_SITES}, got {self.min_sites}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def triangle(self) -> int:
        return self.periods * (self.periods + 1) // 2

    @property
    def moments_length(self) -> int:
        return len(self.groups) * (self.triangle + 1)  # + one site count per group


def _group_index(labels: pd.Series, groups: tuple[str, ...]) -> pd.Series:
    """series -> index of its group in ``groups``, for the series of a listed group, sorted."""
    index = {g: i for i, g in enumerate(groups)}
    return labels.map(group_label).map(index).dropna().astype(int).sort_index()


def _on_grid(
    frame: pd.DataFrame, series: list[str], grid: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Demand of ``frame``'s rows on the grid as [S, W] (0 where unobserved) and each row's
    (series, period) position. Rows off the grid must be removed first."""
    row_series = pd.Index(series).get_indexer(frame["series"])
    row_period = grid.get_indexer(pd.DatetimeIndex(frame["date"]))
    if (row_series < 0).any() or (row_period < 0).any():
        raise DenoiseError("rows outside the profile's series or periods")
    demand = frame["demand"].to_numpy(dtype=float)
    seen = np.isfinite(demand)
    y = np.zeros((len(series), len(grid)))
    y[row_series[seen], row_period[seen]] = demand[seen]
    return y, row_series, row_period


def grid_dates(cutoff: pd.Timestamp, periods: int, freq: str) -> pd.DatetimeIndex:
    """The last ``periods`` period dates up to ``cutoff``, as the node pipeline labels periods."""
    end = pd.Period(cutoff, freq)
    return pd.period_range(end=end, periods=periods, freq=freq).end_time.normalize()


@dataclass(frozen=True)
class SiteHistory:
    """One site's series of the listed groups on the grid, demand / series mean."""

    series: list[str]
    group: np.ndarray  # [S] index into DenoiseSettings.groups
    z: np.ndarray  # [S, W]

    @classmethod
    def of(
        cls,
        train: pd.DataFrame,
        scale: pd.Series,
        labels: pd.Series,
        s: DenoiseSettings,
        grid: pd.DatetimeIndex,
    ) -> SiteHistory:
        """``labels``: series -> group value (a series key column of the site's key map)."""
        group = _group_index(labels, s.groups)
        rows = train[train["series"].isin(group.index) & train["date"].isin(grid)]
        group = group[group.index.isin(rows["series"].unique())]  # a group is held by its history
        y, _, _ = _on_grid(rows, list(group.index), grid)
        unit = np.array(scale.reindex(group.index).abs(), dtype=float)  # a writable copy
        unit[~(unit > 1e-3)] = 1.0  # no mean to speak of (NaN, 0): the series' own units
        z = y / unit[:, None]
        return cls(list(group.index), group.to_numpy(), z)

    def site_groups(self, n_groups: int) -> np.ndarray:
        held = np.zeros(n_groups)
        held[np.unique(self.group)] = 1.0
        return held

    def moments(self, s: DenoiseSettings, site_counts: np.ndarray) -> np.ndarray:
        """[G·(W(W+1)/2 + 1)]: per group Σ z zᵀ (upper triangle) and 1, for eligible groups only."""
        eligible = np.rint(site_counts) >= s.min_sites
        out = np.zeros((len(s.groups), s.triangle + 1))
        upper = np.triu_indices(s.periods)
        z = np.clip(self.z, -Z_CLIP, Z_CLIP)
        for g in np.unique(self.group):
            if eligible[g]:
                rows = z[self.group == g]
                out[g, :-1] = (rows.T @ rows)[upper]
                out[g, -1] = 1.0
        return out.ravel()


@dataclass(frozen=True)
class Profile:
    """The shapes a site keeps from the network's summed moments (``PROFILE_FILE``)."""

    basis: np.ndarray  # [G, W, rank]; zeros for groups with no usable sum
    sites: np.ndarray  # [G] sites in each group's sum (0 = not shared)
    groups: tuple[str, ...]
    group_by: str
    end: pd.Timestamp  # last period of the grid
    freq: str
    shrink: float
    profile_id: str  # digest of the summed ciphertext: which run's sum this is

    @classmethod
    def from_moments(
        cls, summed: np.ndarray, s: DenoiseSettings, end: pd.Timestamp, freq: str, profile_id: str
    ) -> Profile:
        if len(summed) != s.moments_length:
            raise DenoiseError(f"{len(summed)} summed moments, the layout has {s.moments_length}")
        if not np.all(np.isfinite(summed)):
            raise DenoiseError("the summed moments are not finite: corrupt")
        cells = summed.reshape(len(s.groups), s.triangle + 1)
        sites = np.rint(cells[:, -1])
        if (short := (sites > 0) & (sites < s.min_sites)).any():
            g = s.groups[int(np.argmax(short))]
            raise DenoiseError(
                f"group {g} is summed over {int(sites[short][0])} sites, fewer than the minimum of "
                f"{s.min_sites}: refused"
            )
        basis = np.zeros((len(s.groups), s.periods, s.rank))
        upper = np.triu_indices(s.periods)
        for g in np.flatnonzero(sites):
            moment = np.zeros((s.periods, s.periods))
            moment[upper] = cells[g, :-1]
            moment = moment + np.triu(moment, 1).T
            _, vectors = np.linalg.eigh(moment)  # ascending eigenvalues
            basis[g] = vectors[:, ::-1][:, : s.rank]
        return cls(basis, sites, s.groups, s.group_by, pd.Timestamp(end), freq, s.shrink, profile_id)

    @property
    def grid(self) -> pd.DatetimeIndex:
        return grid_dates(self.end, self.basis.shape[1], self.freq)

    def apply(self, panel: pd.DataFrame, labels: pd.Series) -> np.ndarray:
        """Per panel row: the denoised demand on the grid for series of a shared group, else the
        demand itself. Linear in y, so the site's own scaling does not matter."""
        out = panel["demand"].to_numpy(dtype=float).copy()
        group = _group_index(labels, self.groups)
        group = group[self.sites[group.to_numpy()] > 0]
        rows = np.flatnonzero((panel["series"].isin(group.index) & panel["date"].isin(self.grid)).to_numpy())
        if not len(rows):
            return out
        y, row_series, row_period = _on_grid(panel.iloc[rows], list(group.index), self.grid)
        basis = self.basis[group.to_numpy()]  # [S, W, k]
        projected = np.einsum("swk,sk->sw", basis, np.einsum("swk,sw->sk", basis, y))
        smooth = self.shrink * projected + (1 - self.shrink) * y
        out[rows] = np.where(np.isfinite(out[rows]), smooth[row_series, row_period], np.nan)
        return out

    def save(self, path: Path) -> None:
        with replaced_atomically(path) as out:
            self._save(out)

    def _save(self, out: BinaryIO) -> None:
        np.savez(
            out,
            basis=self.basis,
            sites=self.sites,
            groups=np.array(self.groups, dtype=str),
            meta=np.array([self.group_by, self.end.date().isoformat(), self.freq, self.profile_id]),
            shrink=np.array(self.shrink),
        )

    @classmethod
    def load(cls, path: Path) -> Profile:
        if not path.is_file():
            raise DenoiseError(f"{path} not found: this node took no part in the run's cross-site profile")
        with np.load(path, allow_pickle=False) as blob:
            group_by, end, freq, profile_id = (str(v) for v in blob["meta"])
            return cls(
                blob["basis"],
                blob["sites"],
                tuple(str(g) for g in blob["groups"]),
                group_by,
                pd.Timestamp(end),
                freq,
                float(blob["shrink"]),
                profile_id,
            )
