"""What a warehouse node does with its own data: prepare, train, evaluate, forecast.

Plain functions over a node folder (see common.config); the ClientApp and the node CLI call them.
Everything under ``NODE/private`` stays on the node: prepared demand, the pseudonym key and map,
the quarantine file and the decrypted global model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from common.calibration import IntervalCalibration
from common.cells import FLAG_WORDS, numbers_or_empty, parse_all_dates
from common.config import ConfigError, NodeConfig, require_columns
from common.deid import load_or_create_secret, pseudonym, series_label
from common.demand import mark_events, prepare
from common.denoise import PROFILE_FILE, DenoiseError, Profile
from common.evaluation import naive_positions, pinball_per_point
from common.files import check_output, owner_only
from common.model import ModelConfig, build_model, load_vector, model_vector
from common.tables import MalformedLine, read_table, row_locator
from common.training import TrainConfig, mean_from_quantiles, predict_scaled, train_local
from common.windows import SeriesStats, WindowSet, build_windows, like_forecasts, season_lag, series_stats
from warehouse_node.model_store import load_global_model

DEMAND_FILE, MAP_FILE, QUARANTINE_FILE = "demand.parquet", "series_map.parquet", "quarantine.csv"
_LOADED: dict[tuple, NodeData] = {}  # (folder, file versions, horizon, validation) -> NodeData


def prepare_node(cfg: NodeConfig) -> dict[str, int]:
    """Run the data pipeline and write its outputs under private/. Return quarantine counts."""
    check_output(cfg.private_dir, folder=True)
    secret = load_or_create_secret(cfg.private_dir)
    malformed: list[MalformedLine] = []
    raw = read_table(cfg.data.path, malformed)
    locate = row_locator(cfg.data.path, raw)
    prepared = prepare(raw, cfg.data, secret, malformed=malformed, locate=locate)
    del raw, locate
    key_map = prepared.key_map.assign(ended=prepared.key_map["series"].isin(prepared.ended))
    with owner_only(cfg.private_dir) as private:  # the pseudonyms' key to the skus is in here
        prepared.panel.to_parquet(private / DEMAND_FILE, index=False)
        key_map.to_parquet(private / MAP_FILE, index=False)
        prepared.quarantine.to_csv(private / QUARANTINE_FILE, index=False)
    counts = prepared.counts()
    counts["series"] = int(prepared.panel["series"].nunique())
    counts["periods"] = len(prepared.panel)
    counts["dropped_columns"] = len(prepared.deid.dropped)
    return counts


def read_private(cfg: NodeConfig, name: str) -> pd.DataFrame:
    """One of the tables ``prepare`` writes to NODE/private; a damaged one says how to rebuild it."""
    path = cfg.private_dir / name
    rebuild = f"rebuild it with fedstock-node prepare --node {cfg.folder}"
    if not path.is_file():
        raise ConfigError(f"{path} not found: {rebuild}")
    try:
        return pd.read_parquet(path)
    except Exception:  # pyarrow raises several types for a damaged file
        raise ConfigError(f"{path} is damaged (not a readable Parquet file): {rebuild}") from None


def load_panel(cfg: NodeConfig) -> pd.DataFrame:
    path = cfg.private_dir / DEMAND_FILE
    if not path.is_file() or path.stat().st_mtime < cfg.data.path.stat().st_mtime:
        prepare_node(cfg)
    return read_private(cfg, DEMAND_FILE)


@dataclass
class NodeData:
    """The node's panel split at its validation cutoff, with the statistics the model needs.

    The last ``validation`` periods are held out from training and scored every round; with
    ``validation = 0`` the node trains on all its history (the final fit before forecasting) and
    the per-round scores are in-sample."""

    panel: pd.DataFrame
    train: pd.DataFrame
    stats: SeriesStats
    cutoff: pd.Timestamp
    lag: int
    _train_windows: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls, cfg: NodeConfig, horizon: int, validation: int | None = None, denoised: bool = False
    ) -> NodeData:
        """Cached per prepared file version: a simulation calls this every round for every node.
        ``denoised``: the seasonal-lag input comes from the run's cross-site profile (common/denoise.py)."""
        load_panel(cfg)  # re-runs the pipeline when the raw file is newer
        versions = [(cfg.private_dir / DEMAND_FILE).stat().st_mtime_ns]
        if denoised and (cfg.private_dir / PROFILE_FILE).is_file():
            versions.append((cfg.private_dir / PROFILE_FILE).stat().st_mtime_ns)
        key = (str(cfg.folder), tuple(versions), horizon, validation, denoised)
        if key not in _LOADED:
            if len(_LOADED) >= 64:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = cls._read(cfg, horizon, validation, denoised)
        return _LOADED[key]

    @classmethod
    def _read(cls, cfg: NodeConfig, horizon: int, validation: int | None, denoised: bool) -> NodeData:
        return cls.of_panel(cfg, read_private(cfg, DEMAND_FILE), horizon, validation, denoised)

    @classmethod
    def of_panel(
        cls, cfg: NodeConfig, panel: pd.DataFrame, horizon: int, validation: int | None, denoised: bool
    ) -> NodeData:
        """The same over a given part of the node's prepared panel (a backtest's history)."""
        dates = np.sort(panel["date"].unique())
        validation = horizon if validation is None else validation
        if len(dates) <= max(horizon, validation):
            raise ValueError(f"{cfg.name}: {len(dates)} periods of history, need more than {horizon}")
        cutoff = pd.Timestamp(dates[-validation - 1])
        if denoised:
            profile = Profile.load(cfg.private_dir / PROFILE_FILE)
            panel = panel.assign(profile=profile.apply(panel, group_labels(cfg, profile.group_by)))
        train = panel[panel["date"] <= cutoff]
        stats = series_stats(train, cfg.data.static, cfg.data.observed)
        return cls(panel, train, stats, cutoff, season_lag(cfg.data.frequency))

    def windows(self, frame: pd.DataFrame, m: ModelConfig, origins: str = "all") -> WindowSet:
        return build_windows(
            frame,
            self.stats,
            m.lookback,
            m.horizon,
            origins=origins,
            lag=self.lag,
            season_blend=m.season_blend,
        )

    def train_windows(self, m: ModelConfig) -> WindowSet:
        key = (m.lookback, m.horizon, m.anchor, m.season_blend)
        if key not in self._train_windows:
            windows = self.windows(self.train, m)
            self._train_windows[key] = like_forecasts(windows) if m.anchor == "seasonal" else windows
        return self._train_windows[key]

    def holdout_windows(self, m: ModelConfig) -> WindowSet:
        """One window per live series whose horizon is the node's last H periods."""
        last = self.panel.groupby("series")["date"].max()
        alive = last.index[(last == self.panel["date"].max()) & last.index.isin(self.stats.scale.index)]
        return self.windows(self.panel[self.panel["series"].isin(alive)], m, origins="last")

    def calibration_windows(self, m: ModelConfig) -> WindowSet:
        """Training windows whose horizon covers the same part of the season one season before the
        next forecast (origins within ±H/3 periods): errors differ by season (holidays, peaks),
        so the intervals are calibrated on the stretch of last season that the forecast repeats.
        A node with less than a season of history uses its most recent windows instead."""
        windows = self.train_windows(m)
        length = self.train.groupby("series").size().reindex(windows.series).to_numpy()
        end = m.lookback + length[windows.index[:, 0]]
        keep = np.abs(windows.index[:, 1] - (end - self.lag)) <= m.horizon // 3
        if not keep.any():
            keep = windows.index[:, 1] >= end - m.horizon - 2 * (m.horizon // 3)
        return replace(windows, index=windows.index[keep])


def group_labels(cfg: NodeConfig, group_by: str) -> pd.Series:
    """series (pseudonym) -> its value of the series key ``group_by``, from the private key map."""
    key_map = read_private(cfg, MAP_FILE)
    if group_by not in key_map.columns or group_by not in cfg.data.series_keys:
        raise DenoiseError(f"network-group {group_by!r} is not a series key of this site")
    return key_map.set_index("series")[group_by]


def local_update(
    data: NodeData,
    m: ModelConfig,
    t: TrainConfig,
    global_vector: np.ndarray | None,
    seed: int,
    on_epoch: Callable[[int, int, float], None] | None = None,
    optimizer_state: dict | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, int, float]:
    """Start from the global model (or the seeded initial one); return (weights, n, train loss).
    ``optimizer_state``: the one to continue, updated in place; ``device``: where to train
    (``common.training.train_local``)."""
    model = build_model(m, seed)
    if global_vector is not None:
        load_vector(model, global_vector)
    windows = data.train_windows(m)
    loss = train_local(model, windows, t, seed, on_epoch, optimizer_state, device)
    return model_vector(model), len(windows), loss


def seasonal_naive(panel: pd.DataFrame, series: list[str], horizon: int, season: int) -> np.ndarray:
    """[S, H] forecasts of each series' last H periods (common/evaluation.py ``naive_positions``);
    a period before the history starts gets the history's mean."""
    by_series = panel.sort_values("date").groupby("series")["demand"]
    out = np.zeros((len(series), horizon))
    for i, s in enumerate(series):
        hist = by_series.get_group(s).to_numpy()[:-horizon]
        idx = naive_positions(len(hist), horizon, season)
        out[i] = np.where(idx >= 0, hist[np.clip(idx, 0, None)], hist.mean())
    return out


def holdout_metrics(data: NodeData, m: ModelConfig, vector: np.ndarray, season: int) -> dict[str, float]:
    """Sums (not means) over the hold-out window, so the coordinator can add them encrypted."""
    model = build_model(m, 0)
    load_vector(model, vector)
    windows = data.holdout_windows(m)
    rows = windows.index[:, 0]  # a series too young for a window has none
    scale = np.expm1(windows.log_scale[rows])[:, None]
    scaled = predict_scaled(model, windows)
    target = windows.batch(np.arange(len(windows)))["target"]
    pred, actual = scaled * scale[..., None], target * scale
    naive = seasonal_naive(data.panel, [windows.series[i] for i in rows], m.horizon, season)
    levels = m.quantiles
    lo, hi = (levels.index(0.1), levels.index(0.9)) if {0.1, 0.9} <= set(levels) else (0, -1)
    median = pred[..., levels.index(0.5)]
    return {
        "abs_err_model": float(np.abs(median - actual).sum()),
        "abs_err_naive": float(np.abs(naive - actual).sum()),
        "pinball_scaled": float(pinball_per_point(scaled, target, levels).sum()),
        "covered_80": float(((actual >= pred[..., lo]) & (actual <= pred[..., hi])).sum()),
        "points": float(actual.size),
    }


def _future_rows(cfg: NodeConfig, data: NodeData, m: ModelConfig, live: list[str]) -> pd.DataFrame:
    """Placeholder horizon rows with known-future covariates: planned promo/price, holidays."""
    dates = horizon_dates(cfg, data.panel["date"].max(), m.horizon)
    last_rows = data.panel.sort_values("date").groupby("series").tail(1).set_index("series")
    fut = pd.DataFrame([(s, d) for s in live for d in dates], columns=["series", "date"])
    fut["demand"] = np.nan  # unknown: the model sees these steps as unobserved
    fut["price"] = fut["series"].map(last_rows["price"])
    fut["promo"] = np.nan if cfg.data.promo else 0.0  # unknown unless planned
    fut["holiday"] = 0.0
    fut = mark_events(fut, cfg.data)
    for col in cfg.data.static:
        fut[col] = fut["series"].map(last_rows[col])
    for col in cfg.data.observed:
        if col not in cfg.data.static:
            fut[col] = np.nan  # past-only: never fed for horizon steps
    if cfg.data.future is not None:
        fut = _apply_plan(cfg, fut)
    return fut


def _apply_plan(cfg: NodeConfig, fut: pd.DataFrame) -> pd.DataFrame:
    """Overlay the node's planned promotions and prices (keys pseudonymised like the history)."""
    plan = read_table(cfg.data.future)
    keys = list(cfg.data.series_keys)
    require_columns(plan, [*keys, "date"], f"future file {cfg.data.future}")
    secret = load_or_create_secret(cfg.private_dir)
    plan["series"] = [pseudonym(secret, s) for s in series_label(plan[keys])]
    plan["date"] = (
        parse_all_dates(plan["date"], f"future file {cfg.data.future}", cfg.data.date_order)
        .dt.to_period(cfg.data.period_freq)
        .dt.end_time.dt.normalize()
    )
    cols = {c: d for c, d in ((cfg.data.promo, "promo"), (cfg.data.price, "price")) if c and c in plan}
    plan = plan.rename(columns=cols)
    for raw, col in cols.items():  # an empty cell is "unknown"; anything else must be a number
        what = f"future file {cfg.data.future} column {raw!r}"
        plan[col] = numbers_or_empty(plan[col], what, FLAG_WORDS if col == "promo" else None)
    agg = plan.groupby(["series", "date"])[list(cols.values())].agg(
        {"promo": "max", "price": "mean"} if len(cols) == 2 else "max"
    )
    plan_cols = {c: f"{c}_plan" for c in cols.values()}
    merged = fut.merge(
        agg.rename(columns=plan_cols).assign(_planned=True).reset_index(), on=["series", "date"], how="left"
    )
    planned = merged["_planned"].fillna(False).astype(bool)
    for col in cols.values():  # a planned row wins, even when it says "unknown" (NaN)
        merged[col] = merged[f"{col}_plan"].where(planned, merged[col])
    merged = merged.drop(columns=["_planned"])
    return merged.drop(columns=[f"{c}_plan" for c in cols.values()])


def forecast(cfg: NodeConfig, include_ended: bool = False) -> pd.DataFrame:
    """Forecast the next H periods of every live series with the saved global model.

    Statistics (scales) come from all the history. With ``include_ended``, series that ended
    (no demand in their last periods) are listed too, with a forecast of 0 and ``ended = True``."""
    model, m, _ = load_global_model(cfg)
    data = NodeData.load(cfg, m.horizon, validation=0, denoised=m.denoise)
    key_map = read_private(cfg, MAP_FILE)
    live = sorted(set(key_map.loc[~key_map["ended"], "series"]) & set(data.stats.scale.index))
    ended = sorted(set(key_map.loc[key_map["ended"], "series"])) if include_ended else []
    fut = _future_rows(cfg, data, m, live + ended)
    extended = pd.concat([data.panel[data.panel["series"].isin(live)], fut], ignore_index=True)
    windows = build_windows(
        extended[extended["series"].isin(live)],
        data.stats,
        m.lookback,
        m.horizon,
        min_history=1,
        origins="last",
        lag=data.lag,
        season_blend=m.season_blend,
    )
    rows = windows.index[:, 0]
    scale = np.expm1(windows.log_scale[rows])[:, None, None]
    errors = CalibrationErrors.of(model, data.calibration_windows(m), m)
    scaled = errors.interval_calibration(m).apply(predict_scaled(model, windows), windows.log_scale[rows])
    pred = np.clip(scaled * scale, 0.0, None)
    residual_sd = errors.residual_sd(m, [windows.series[i] for i in rows], scale[:, 0, 0])
    pred = np.concatenate([pred, np.zeros((len(ended), m.horizon, len(m.quantiles)))])
    names_order = [*(windows.series[i] for i in rows), *ended]
    rows = fut.set_index("series").loc[names_order, "date"].to_numpy().reshape(-1, m.horizon)
    out = pd.DataFrame(
        {
            "node": cfg.name,
            "series": np.repeat(names_order, m.horizon),
            "date": rows.ravel(),
            "mean": mean_from_quantiles(pred, m.quantiles).ravel(),
        }
    )
    for j, level in enumerate(m.quantiles):
        out[f"q{round(level * 100):02d}"] = pred[..., j].ravel()
    out["residual_sd"] = np.repeat(np.concatenate([residual_sd, np.zeros(len(ended))]), m.horizon)
    out["path_corr"] = _path_correlation(model, data.holdout_windows(m), m)
    if include_ended:
        out["ended"] = out["series"].isin(ended)
    return with_site_keys(cfg, out, key_map)


def with_site_keys(cfg: NodeConfig, out: pd.DataFrame, key_map: pd.DataFrame) -> pd.DataFrame:
    """A forecast keyed by pseudonym (``series``) in the site's own keys: sku and series keys."""
    names = key_map.set_index("series")
    out.insert(1, "sku", out["series"].map(names["sku"]).to_numpy())
    for k, col in enumerate(c for c in cfg.data.series_keys if c not in out.columns):
        out.insert(2 + k, col, out["series"].map(names[col]).to_numpy())
    return out.drop(columns=["series"])


def horizon_dates(cfg: NodeConfig, last: pd.Timestamp, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` periods after ``last``, each dated by its period's end."""
    freq = cfg.data.period_freq
    return pd.period_range(pd.Period(last, freq) + 1, periods=horizon, freq=freq).end_time.normalize()


@dataclass(frozen=True)
class CalibrationErrors:
    """The global model's forecasts on the node's calibration windows, in scaled units."""

    windows: WindowSet
    pred: np.ndarray  # [N, H, Q]
    actual: np.ndarray  # [N, H]
    observed: np.ndarray  # [N, H]

    @classmethod
    def of(cls, model, calibration: WindowSet, m: ModelConfig) -> CalibrationErrors:
        idx = calibration.index
        observed = calibration.past[idx[:, :1], idx[:, 1:] + np.arange(m.horizon), 1]
        actual = calibration.batch(np.arange(len(calibration)))["target"]
        return cls(calibration, predict_scaled(model, calibration), actual, observed)

    def interval_calibration(self, m: ModelConfig) -> IntervalCalibration:
        """Conformal interval margins from these windows (the node's data only)."""
        log_scale = self.windows.log_scale[self.windows.index[:, 0]]
        return IntervalCalibration.fit(self.pred, self.actual, self.observed, log_scale, m.quantiles)

    def residual_sd(self, m: ModelConfig, series: list[str], scale: np.ndarray) -> np.ndarray:
        """Per-series standard deviation of one-period median errors, in units; a series with
        fewer than one horizon of calibration errors gets the node's pooled figure."""
        err = (self.pred[..., m.quantiles.index(0.5)] - self.actual)[self.observed > 0]
        names = np.broadcast_to(self.windows.index[:, :1], self.observed.shape)[self.observed > 0]
        by_row = pd.Series(err).groupby(names).agg(["std", "size"])
        pooled = float(np.std(err)) if err.size > 1 else float("nan")
        row_of = {name: i for i, name in enumerate(self.windows.series)}
        own = by_row.reindex([row_of.get(s, -1) for s in series])
        sd = own["std"].where(own["size"] >= m.horizon, pooled).to_numpy(dtype=float)
        return sd * scale


def _path_correlation(model, holdout: WindowSet, m: ModelConfig) -> float:
    from common.inventory import horizon_correlation

    if len(holdout) == 0:
        return 0.5
    pred = predict_scaled(model, holdout)
    actual = holdout.batch(np.arange(len(holdout)))["target"]
    return horizon_correlation(pred, actual, m.quantiles)
