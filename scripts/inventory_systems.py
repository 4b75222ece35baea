"""Forecasts for the year-long inventory replay: each system re-forecasts at every review.

A system is a forecaster as a planner would run it: retrained on a fixed schedule (``Timeline``:
at the replay's first origin, then every ``every`` periods), never on a period it is scored on,
and asked at every review for the next periods from the history seen so far.

* ``snaive``: the same period a season earlier; σ the sd of its errors over the season before
  the last retraining.
* ``ets``: statsforecast AutoETS per series, fitted at each retraining and applied to the history
  through each review with its fitted parameters; σ from its 80% interval.
* ``lightgbm``: the global LightGBM peer (scripts/peers.py) with quantile levels ``LGBM_LEVELS``.
* ``local`` / ``he``: the LSTM-attention model, each store alone / federated under CKKS through the
  real apps (coordinator/planner/simulate.py); each node forecasts with the model it holds
  (warehouse_node/backtest.py). ``he`` also forecasts the ``calibration`` periods before the first
  review, whose errors calibrate the network forecast's interval from the start.

Every system returns one long table: the dataset's keys, ``origin`` (the last period of history
read), ``step`` (0 = the period after it), ``mean``, and ``q..`` columns (quantile systems) or
``sd`` (point systems), plus ``path_corr`` (the LSTM's correlation along the horizon).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import load_node_config
from common.public_data import DATASETS, WRITERS, to_dataset_columns
from coordinator.planner.simulate import SimulationSettings, prepare_nodes, train
from scripts.peers import RollingETS, RollingLightGBM, known_covariates
from warehouse_node.backtest import forecasts_at
from warehouse_node.pipeline import prepare_node

LGBM_LEVELS = (0.02, 0.1, 0.5, 0.9, 0.98)  # tails for service levels up to 98%; each level is one model
Log = Callable[[str], None]


@dataclass(frozen=True)
class Setup:
    folder: str
    scored: int  # periods scored: the last year of the shared history
    warmup: int  # periods replayed before them, not scored (the opening stock fades)
    trainings: int  # retrainings over the replay, evenly spaced
    calibration: int  # periods before the replay whose errors calibrate the network interval
    leads: tuple[int, ...]
    season: int  # seasonal naive's lag
    ets_season: int
    unit: str
    year: float  # periods per year (turnover, holding rate)


# Retraining: four times over Walmart's 56 weeks (every 14), twice over store_item's 393 days (every
# 197; its federation trains 30-odd rounds, and each daily review re-forecasts anyway)
SETUPS = {
    "walmart": Setup("walmart", 52, 4, 4, 13, (1, 2), 52, 52, "$", 52.0),
    "store_item": Setup("store_item_demand", 365, 28, 2, 56, (1, 2, 7), 364, 7, "units", 365.0),
}


@dataclass(frozen=True)
class Timeline:
    """Periods of the replay. Review t uses the forecast made at ``origins[t]`` (the period before
    it); training k happens at ``origins[k * every]`` and serves the reviews up to the next one."""

    dates: pd.DatetimeIndex  # every period of the history, in order
    start: int  # position of the first replayed period
    periods: int
    trainings: int
    calibration: int

    @classmethod
    def of(cls, sales: pd.DataFrame, name: str, setup: Setup) -> Timeline:
        ds = DATASETS[name]
        dates = pd.DatetimeIndex(sorted(sales[ds.date].unique()))
        periods = setup.scored + setup.warmup
        return cls(dates, len(dates) - periods, periods, setup.trainings, setup.calibration)

    @property
    def every(self) -> int:
        return -(-self.periods // self.trainings)

    @property
    def origins(self) -> pd.DatetimeIndex:
        return self.dates[self.start - 1 : self.start - 1 + self.periods]

    @property
    def replay_dates(self) -> pd.DatetimeIndex:
        return self.dates[self.start : self.start + self.periods]

    def training_origin(self, k: int) -> pd.Timestamp:
        return self.origins[k * self.every]

    def served_by(self, k: int, calibration: bool = False) -> list[pd.Timestamp]:
        """The origins forecast by training k's model (with the calibration periods for k = 0)."""
        served = list(self.origins[k * self.every : (k + 1) * self.every])
        if calibration and k == 0:
            served = list(self.dates[self.start - 1 - self.calibration : self.start - 1]) + served
        return served


def snaive(sales: pd.DataFrame, name: str, tl: Timeline, steps: int, season: int, log: Log) -> pd.DataFrame:
    ds = DATASETS[name]
    wide = _wide(sales, name, tl)
    values = wide.to_numpy(dtype=float)
    parts = []
    for k in range(tl.trainings):
        at = tl.dates.get_loc(tl.training_origin(k))
        t = np.arange(max(season, at - season + 1), at + 1)  # the season up to the training origin
        errors = values[t] - values[t - season]
        sd = np.nan_to_num(np.nanstd(errors, axis=0)) if len(t) else np.zeros(values.shape[1])
        for origin in tl.served_by(k):
            p = tl.dates.get_loc(origin)
            idx = p + 1 + np.arange(steps) - season
            mean = np.where(idx[:, None] >= 0, values[np.clip(idx, 0, None)], np.nan)
            parts.append(_long(wide.columns, origin, np.nan_to_num(mean).T, {"sd": np.repeat(sd, steps)}))
    log(f"{name}: seasonal naive forecasts at {tl.periods} reviews")
    return _named(pd.concat(parts, ignore_index=True), ds)


def ets(sales: pd.DataFrame, name: str, tl: Timeline, steps: int, season: int, log: Log) -> pd.DataFrame:
    ds = DATASETS[name]
    shape = (list(ds.keys), ds.date, ds.target, _freq(name))
    parts = []
    for k in range(tl.trainings):
        origin = tl.training_origin(k)
        model = RollingETS.fit(sales[sales[ds.date] <= origin], *shape, season)
        served = tl.served_by(k)
        parts.append(model.predict_at(sales[sales[ds.date] <= served[-1]], served, steps))
        log(f"{name}: AutoETS fitted at {origin.date()}, forecast {len(served)} reviews")
    return pd.concat(parts, ignore_index=True)


def lightgbm(sales: pd.DataFrame, name: str, tl: Timeline, steps: int, data: Path, log: Log) -> pd.DataFrame:
    ds = DATASETS[name]
    shape = (list(ds.keys), ds.date, ds.target, _freq(name), ds.horizon)
    known = known_covariates(name, data)
    parts = []
    for k in range(tl.trainings):
        origin = tl.training_origin(k)
        model = RollingLightGBM.fit(sales[sales[ds.date] <= origin], *shape, known=known, levels=LGBM_LEVELS)
        served = tl.served_by(k)
        parts.append(model.predict_at(sales[sales[ds.date] <= served[-1]], served, steps))
        log(f"{name}: LightGBM fitted at {origin.date()}, forecast {len(served)} reviews")
    out = pd.concat(parts, ignore_index=True)
    return out.assign(mean=out["q50"])


def lstm(
    name: str,
    mode: str,
    tl: Timeline,
    steps: int,
    data: Path,
    work: Path,
    seed: int,
    rounds: int | None,
    log: Log,
) -> pd.DataFrame:
    """Train at each training origin (simulate's modes), then let every node forecast the reviews
    its model serves from its own folder, its history extended through the last of them."""
    parts = []
    for k in range(tl.trainings):
        origin = tl.training_origin(k)
        cut = work / f"{mode}-{k}"
        if cut.exists():
            shutil.rmtree(cut)
        s = SimulationSettings(name, data, mode=mode, rounds=rounds, seed=seed, until=str(origin.date()))
        nodes = prepare_nodes(s, cut, log)
        train(nodes, s, cut, log)
        served = tl.served_by(k, calibration=mode == "he")
        WRITERS[name](data, cut / "nodes", str(served[-1].date()))  # the history through the last review
        frames = []
        for d in sorted((cut / "nodes").iterdir()):
            cfg = load_node_config(d)
            prepare_node(cfg)
            frames.append(forecasts_at(cfg, origin, served, steps))
        parts.append(to_dataset_columns(name, pd.concat(frames, ignore_index=True)))
        log(f"{name}: {mode} model of {origin.date()} forecast {len(served)} reviews")
    return pd.concat(parts, ignore_index=True)


def _freq(name: str) -> str:
    return "7D" if name == "walmart" else "D"


def _wide(sales: pd.DataFrame, name: str, tl: Timeline) -> pd.DataFrame:
    ds = DATASETS[name]
    wide = sales.pivot_table(index=ds.date, columns=list(ds.keys), values=ds.target, aggfunc="sum")
    return wide.reindex(tl.dates)


def _long(columns: pd.Index, origin: pd.Timestamp, mean: np.ndarray, extra: dict) -> pd.DataFrame:
    """[series × steps] means at one origin as long rows."""
    n, steps = mean.shape
    ids = columns.to_frame(index=False)
    out = ids.loc[np.repeat(np.arange(n), steps)].reset_index(drop=True)
    return out.assign(origin=origin, step=np.tile(np.arange(steps), n), mean=mean.ravel(), **extra)


def _named(frame: pd.DataFrame, ds) -> pd.DataFrame:
    return frame.astype({k: np.int64 for k in ds.keys})
