"""The peers a practitioner would pick instead of us: benchmark-only, never a runtime dependency.

* ``autoets``: statsforecast AutoETS per series, additive season, 80% intervals -> q10/q90.
* ``lightgbm_global``: one LightGBM over all series (M5-winner style), direct multi-horizon: one row per
  (series, origin, step h), every feature computed as of the origin (lags, rolling means, the
  level-adjusted seasonal lag) or known in advance (calendar, holidays, markdowns). Three quantile
  models (0.1/0.5/0.9); the target and its features are divided by the series scale and the rows
  weighted by it, so the pinball loss is in units.
* ``lightgbm_per_store``: the same model trained for each store on its own rows (a site alone).

Every forecaster takes the pooled history ``[keys..., date, target]`` and returns
``[keys..., date, mean, q10, q50, q90]`` for the ``horizon`` periods after its last date, the shape
``common.evaluation.score`` reads. Forecasts are clipped at 0, as the project's baselines are.
Needs ``pip install -e '.[peers]'`` (lightgbm, statsforecast).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from common.public_data import MARKDOWNS, WALMART_EVENTS

MISSING = "the benchmark peers need lightgbm and statsforecast: pip install -e '.[peers]'"
QUANTILES = {"q10": 0.1, "q50": 0.5, "q90": 0.9}
PARAMS = {
    "num_leaves": 63,
    "learning_rate": 0.05,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.7,
    "bagging_freq": 1,
    "max_bin": 127,
    "num_threads": 1,
    "verbose": -1,
    "seed": 7,
}
ROUNDS = 300
MIN_ETS = 10  # statsforecast refuses fewer points ("tiny datasets")
HOLIDAY_CODES = {name: i + 1 for i, name in enumerate(WALMART_EVENTS.values())}


def _require(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(MISSING) from None


@dataclass(frozen=True)
class LagSpec:
    """Which past values a row sees. ``recent``: lags counted back from the origin (0 = the origin's
    own value); ``seasonal``: lags counted back from the target period (each longer than the
    horizon); ``windows``: rolling means ending at the origin; ``level``: window of the level
    ratio (last ``level`` periods over the same periods one ``season`` earlier); ``phase``: weekday
    cycle of daily data (mean of the last 4 same-weekday values at or before the origin)."""

    recent: tuple[int, ...]
    seasonal: tuple[int, ...]
    windows: tuple[int, ...]
    level: int
    season: int
    phase: int = 0
    origins: int = 24  # training origins, evenly spaced up to the cutoff


WEEKLY = LagSpec((0, 1, 2, 3), (52, 104), (4, 8, 13, 26, 52), level=8, season=52)
DAILY = LagSpec((0, 1, 2, 6, 13, 27), (364, 728), (7, 14, 28, 91, 182, 364), 28, 364, phase=7, origins=16)


def spec_for(freq: str) -> LagSpec:
    return DAILY if freq.upper() == "D" else WEEKLY


def _wide(history: pd.DataFrame, keys: list[str], date: str, target: str, freq: str) -> pd.DataFrame:
    """[date × series] on the full calendar from the first date to the last; no row = NaN."""
    wide = history.pivot_table(index=date, columns=keys, values=target, aggfunc="sum")
    return wide.reindex(pd.date_range(wide.index.min(), wide.index.max(), freq=freq))


def _finish(out: pd.DataFrame, keys: list[str], date: str) -> pd.DataFrame:
    """Quantiles sorted (no crossing) and clipped at 0; ``mean`` = q50."""
    out[list(QUANTILES)] = np.clip(np.sort(out[list(QUANTILES)].to_numpy(float), axis=1), 0, None)
    out.insert(len(keys) + 1, "mean", out["q50"])
    return out.sort_values([*keys, date]).reset_index(drop=True)


def _output(values: dict[str, np.ndarray], wide: pd.DataFrame, keys: list[str], date: str, freq: str):
    """Long forecast table from [h × series] arrays."""
    h = len(values["q50"])
    future = pd.date_range(wide.index[-1], periods=h + 1, freq=freq)[1:]
    ids = wide.columns.to_frame(index=False).astype(np.int64)
    out = ids.loc[np.tile(np.arange(len(ids)), h)].reset_index(drop=True)
    out[date] = np.repeat(future, len(ids))
    return _finish(out.assign(**{q: values[q].ravel() for q in QUANTILES}), keys, date)


# ---------------------------------------------------------------- AutoETS
def _ets_one(y: np.ndarray, season: int, horizon: int) -> tuple[np.ndarray, ...]:
    """AutoETS with an additive season when two seasons are there, else non-seasonal; a series that
    no ETS fits (too short, constant) repeats its last value with a zero-width interval."""
    for model in _ets_fits(y, season):
        fc = model.predict(horizon, level=[80])
        if all(np.all(np.isfinite(fc[k])) for k in ("mean", "lo-80", "hi-80")):
            return fc["lo-80"], fc["mean"], fc["hi-80"]
    last = np.full(horizon, y[-1] if len(y) else 0.0)
    return last, last, last


def _ets_fits(y: np.ndarray, season: int):
    """The AutoETS fits to try, best first (seasonal when two seasons are there); fits that fail
    are skipped."""
    auto_ets = _require("statsforecast.models").AutoETS
    specs = [(season, "ZZA"), (1, "ZZN")] if len(y) >= 2 * season else [(1, "ZZN")] * (len(y) >= MIN_ETS)
    for m, model in specs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield auto_ets(season_length=m, model=model).fit(y)
        except (ValueError, KeyError, ZeroDivisionError, NotImplementedError, np.linalg.LinAlgError):
            continue


@dataclass
class RollingETS:
    """AutoETS per series fitted once, then applied to the history through each later origin with
    its fitted parameters (statsforecast's ``forward``), as the inventory replay asks."""

    models: list
    series: pd.Index
    shape: tuple  # keys, date, target, freq

    @classmethod
    def fit(cls, history: pd.DataFrame, keys, date, target, freq, season: int) -> RollingETS:
        wide = _wide(history, keys, date, target, freq)
        models = [next(_ets_fits(y, season), None) for y in _from_first(wide)]
        return cls(models, wide.columns, (keys, date, target, freq))

    def predict_at(self, history: pd.DataFrame, origins: list[pd.Timestamp], steps: int) -> pd.DataFrame:
        """[keys..., origin, step, date, mean, sd]: sd from the 80% interval; a series with no fit
        repeats its last value, with the sd of its period-to-period changes."""
        keys, date, target, freq = self.shape
        wide = _wide(history, keys, date, target, freq).reindex(columns=self.series)
        ids = self.series.to_frame(index=False).astype(np.int64)
        parts = []
        for origin in origins:
            upto = wide.loc[:origin]
            mean = np.zeros((len(self.series), steps))
            sd = np.zeros_like(mean)
            for j, y in enumerate(_from_first(upto)):
                mean[j], sd[j] = self._one(self.models[j], y, steps)
            dates = pd.date_range(origin, periods=steps + 1, freq=freq)[1:]
            part = ids.loc[np.repeat(np.arange(len(ids)), steps)].reset_index(drop=True)
            parts.append(
                part.assign(
                    origin=origin,
                    step=np.tile(np.arange(steps), len(ids)),
                    **{date: np.tile(dates, len(ids))},
                ).assign(mean=np.clip(mean.ravel(), 0, None), sd=sd.ravel())
            )
        return pd.concat(parts, ignore_index=True)

    @staticmethod
    def _one(model, y: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        if model is not None and len(y) >= 2:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fc = model.forward(y, steps, level=[80])
                if all(np.all(np.isfinite(fc[k])) for k in ("mean", "lo-80", "hi-80")):
                    return fc["mean"], (fc["hi-80"] - fc["lo-80"]) / (2 * 1.2815515655446004)
            except (ValueError, KeyError, ZeroDivisionError, NotImplementedError, np.linalg.LinAlgError):
                pass
        last = y[-1] if len(y) else 0.0
        spread = float(np.std(np.diff(y))) if len(y) > 2 else 0.0
        return np.full(steps, last), np.full(steps, spread)


def _from_first(wide: pd.DataFrame):
    """Each series from its first row on; missing periods after it are 0."""
    first = wide.notna().to_numpy().argmax(axis=0)
    for j in range(wide.shape[1]):
        yield np.nan_to_num(wide.iloc[first[j] :, j].to_numpy(dtype=float))


def autoets(
    history: pd.DataFrame, keys: list[str], date: str, target: str, freq: str, horizon: int, season: int
) -> pd.DataFrame:
    """statsforecast AutoETS per series (additive season ``season``) with 80% intervals: q10/q90 the
    interval, q50 = mean. Each series starts at its first row; missing periods after it are 0."""
    wide = _wide(history, keys, date, target, freq)
    out = {q: np.zeros((horizon, wide.shape[1])) for q in QUANTILES}
    for j, y in enumerate(_from_first(wide)):
        for q, v in zip(QUANTILES, _ets_one(y, season, horizon), strict=True):
            out[q][:, j] = v
    return _output(out, wide, keys, date, freq)


# ---------------------------------------------------------------- LightGBM features
def known_covariates(name: str, data_dir: Path) -> pd.DataFrame | None:
    """Walmart's known-future inputs per (Store, Date): which holiday (0 none, 1..4) and the planned
    markdowns (NaN = unknown); store_item has none. Weather, fuel, CPI and unemployment are not used."""
    if name != "walmart":
        return None
    features = pd.read_parquet(Path(data_dir) / "features.parquet")
    features["Date"] = pd.to_datetime(features["Date"])
    event = features["Date"].dt.month.map(WALMART_EVENTS).map(HOLIDAY_CODES).fillna(0)
    features["holiday"] = np.where(features["IsHoliday"].astype(bool), event, 0).astype(int)
    return features[["Store", "Date", "holiday", *MARKDOWNS]].astype({"Store": np.int64})


def _calendar(dates: pd.DatetimeIndex, daily: bool) -> dict[str, np.ndarray]:
    cal = {"week": dates.isocalendar().week.to_numpy(int), "month": dates.month.to_numpy()}
    if daily:
        cal |= {"dow": dates.dayofweek.to_numpy(), "doy": dates.dayofyear.to_numpy()}
    return cal


def _shifted(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] for each row, NaN where the index falls before the first period."""
    out = np.full((len(index), values.shape[1]), np.nan)
    ok = index >= 0
    out[ok] = values[index[ok]]
    return out


def feature_frame(scaled: np.ndarray, spec: LagSpec, origins: list[int], horizon: int) -> pd.DataFrame:
    """One row per (origin, h, series) from the scaled [period × series] matrix: every value read is
    at or before the origin (the target itself, column ``y``, is read at origin + h where it exists)."""
    if min(spec.seasonal) <= horizon:
        raise ValueError(f"seasonal lags {spec.seasonal} must be longer than the horizon {horizon}")
    frame = pd.DataFrame(scaled)
    rolls = {w: frame.rolling(w, min_periods=1).mean().to_numpy() for w in spec.windows}
    lvl = frame.rolling(spec.level, min_periods=1).mean().to_numpy()
    n_periods, n_series = scaled.shape
    blocks = []
    for t in origins:
        steps = np.arange(1, horizon + 1)
        ahead = t + steps
        cols: dict[str, np.ndarray] = {"h": np.repeat(steps, n_series)}
        for k in spec.recent:
            cols[f"lag_o{k}"] = np.tile(_shifted(scaled, np.array([t - k]))[0], horizon)
        for s in spec.seasonal:
            cols[f"lag_s{s}"] = _shifted(scaled, ahead - s).ravel()
        for w in spec.windows:
            cols[f"mean_{w}"] = np.tile(rolls[w][t], horizon)
        before = lvl[t - spec.season] if t >= spec.season else np.full(n_series, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.clip(np.where(before > 0, lvl[t] / before, np.nan), 0.2, 5.0)
        cols["seasonal_adj"] = (_shifted(scaled, ahead - spec.season) * ratio).ravel()
        if spec.phase:
            back = ahead - spec.phase * -(-steps // spec.phase)  # last same weekday ≤ origin
            same = [_shifted(scaled, back - spec.phase * i) for i in range(4)]
            cols["phase_last"] = same[0].ravel()
            cols["phase_mean4"] = np.nanmean(np.stack(same), axis=0).ravel()
        inside = ahead < n_periods
        y = np.full((horizon, n_series), np.nan)
        y[inside] = scaled[ahead[inside]]
        cols |= {"origin": np.full(horizon * n_series, t), "series": np.tile(np.arange(n_series), horizon)}
        blocks.append(pd.DataFrame(cols | {"y": y.ravel()}))
    return pd.concat(blocks, ignore_index=True)


def _design(
    history: pd.DataFrame, keys: list[str], date: str, target: str, freq: str, horizon: int, known
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows (targets ≤ the last history date) and the rows to forecast, with scale,
    categorical keys, calendar and known-future columns added."""
    wide = _wide(history, keys, date, target, freq)
    spec = spec_for(freq)
    scale = np.maximum(np.nan_to_num(wide.abs().mean().to_numpy()), 1.0)
    last = len(wide) - 1
    first = min(spec.season // 2, last - 1)
    origins = np.unique(np.linspace(first, last - 1, spec.origins).round().astype(int)).tolist()
    rows = _feature_rows(wide, scale, [*origins, last], horizon, keys, date, freq, known)
    future = rows[rows["origin"] == last]
    train = rows[(rows["origin"] < last) & rows["y"].notna()]
    return train, future


def _feature_rows(
    wide: pd.DataFrame, scale: np.ndarray, origins: list[int], horizon: int, keys, date, freq, known
) -> pd.DataFrame:
    """``feature_frame`` rows at the given origin positions of ``wide``, with the date of each
    target, the series' keys and scale, the calendar and the known-future columns."""
    rows = feature_frame(wide.to_numpy(dtype=float) / scale, spec_for(freq), origins, horizon)
    dates = pd.date_range(wide.index[0], periods=len(wide) + horizon, freq=freq)
    rows = rows.assign(**{date: dates[rows["origin"] + rows["h"]]})
    ids = wide.columns.to_frame(index=False).astype(np.int64)
    rows = rows.join(ids, on="series").assign(
        scale=scale[rows["series"]], log_scale=np.log(scale)[rows["series"]]
    )
    for name, col in _calendar(pd.DatetimeIndex(rows[date]), freq.upper() == "D").items():
        rows[name] = col
    if known is not None:
        rows = rows.merge(known.rename(columns={"Date": date}), on=[keys[0], date], how="left")
        rows["holiday"] = rows["holiday"].fillna(0).astype(int)
    return rows


FEATURE_SKIP = {"y", "origin", "series", "scale"}


def _fit_predict(train: pd.DataFrame, future: pd.DataFrame, date: str, cats: list[str], rounds: int):
    """Three quantile LightGBM models; predictions in units, one array per quantile."""
    boosters, columns = _boosters(train, date, cats, rounds, QUANTILES)
    return {q: b.predict(future[columns]) * future["scale"].to_numpy() for q, b in boosters.items()}


def _boosters(train: pd.DataFrame, date: str, cats: list[str], rounds: int, quantiles: dict[str, float]):
    """One quantile LightGBM per level of ``quantiles`` (name -> level), and the columns they read."""
    lgb = _require("lightgbm")
    columns = [c for c in train.columns if c not in FEATURE_SKIP and c != date]
    cats = [c for c in cats if c in columns and train[c].nunique() > 1]
    columns = [c for c in columns if c in cats or train[c].nunique() > 1 or c == "h"]
    data = lgb.Dataset(
        train[columns], train["y"], weight=train["scale"], categorical_feature=cats, free_raw_data=False
    )
    boosters = {}
    for q, alpha in quantiles.items():
        boosters[q] = lgb.train(
            PARAMS | {"objective": "quantile", "alpha": alpha}, data, num_boost_round=rounds
        )
    return boosters, columns


@dataclass
class RollingLightGBM:
    """The global LightGBM peer fitted once and asked again from later origins (the inventory
    replay): the series scales are those of the fit; every feature still ends at its origin."""

    boosters: dict
    columns: list[str]
    series: pd.Index
    scale: np.ndarray
    shape: tuple  # keys, date, target, freq, horizon
    known: pd.DataFrame | None

    @classmethod
    def fit(
        cls, history, *shape, known=None, levels=(0.1, 0.5, 0.9), rounds: int = ROUNDS
    ) -> RollingLightGBM:
        keys, date, target, freq, horizon = shape
        train, _ = _design(history, keys, date, target, freq, horizon, known)
        named = {f"q{round(a * 100):02d}": a for a in levels}
        boosters, columns = _boosters(train, date, [*keys, "holiday"], rounds, named)
        wide = _wide(history, keys, date, target, freq)
        scale = np.maximum(np.nan_to_num(wide.abs().mean().to_numpy()), 1.0)
        return cls(boosters, columns, wide.columns, scale, shape, known)

    def predict_at(self, history: pd.DataFrame, origins: list[pd.Timestamp], steps: int) -> pd.DataFrame:
        """[keys..., origin, step, date, q..]: the first ``steps`` periods after each origin, read
        from ``history`` through that origin only (a row at origin + h is never an input)."""
        keys, date, target, freq, _ = self.shape
        wide = _wide(history, keys, date, target, freq).reindex(columns=self.series)
        at = wide.index.get_indexer(pd.DatetimeIndex(origins))
        if (at < 0).any():
            raise ValueError("an origin is not a period of the history")
        rows = _feature_rows(wide, self.scale, at.tolist(), steps, keys, date, freq, self.known)
        out = rows[[*keys, date]].assign(origin=wide.index[rows["origin"]], step=rows["h"] - 1)
        names = list(self.boosters)
        pred = np.column_stack([b.predict(rows[self.columns]) for b in self.boosters.values()])
        pred = np.clip(np.sort(pred * rows["scale"].to_numpy()[:, None], axis=1), 0, None)
        return out.assign(**dict(zip(names, pred.T, strict=True))).reset_index(drop=True)


def _lightgbm(history, keys, date, target, freq, horizon, known, rounds, by_store) -> pd.DataFrame:
    train, future = _design(history, keys, date, target, freq, horizon, known)
    cats = [*keys, "holiday"]
    groups = future[keys[0]].unique() if by_store else [None]
    parts = []
    for g in groups:
        tr = train if g is None else train[train[keys[0]] == g]
        fu = future if g is None else future[future[keys[0]] == g]
        if tr.empty:
            pred = {q: np.zeros(len(fu)) for q in QUANTILES}
        else:
            pred = _fit_predict(tr, fu, date, cats, rounds)
        parts.append(fu[[*keys, date]].assign(**pred))
    return _finish(pd.concat(parts, ignore_index=True), keys, date)


def lightgbm_global(history: pd.DataFrame, *shape, known: pd.DataFrame | None = None, rounds: int = ROUNDS):
    """One LightGBM over every series; ``shape``: keys, date, target, freq, horizon (``known``: see
    ``known_covariates``)."""
    return _lightgbm(history, *shape, known, rounds, by_store=False)


def lightgbm_per_store(
    history: pd.DataFrame, *shape, known: pd.DataFrame | None = None, rounds: int = ROUNDS
):
    """The same LightGBM trained separately for each value of ``keys[0]`` on its own rows only."""
    return _lightgbm(history, *shape, known, rounds, by_store=True)
