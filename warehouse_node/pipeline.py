"""What a warehouse node does with its own data: prepare, train, evaluate, forecast.

Plain functions over a node folder (see common.config); the ClientApp and the node CLI call them.
Everything under ``NODE/private`` stays on the node: prepared demand, the pseudonym key and map,
the quarantine file and the decrypted global model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.config import NodeConfig
from common.deid import load_or_create_secret, pseudonym, series_label
from common.demand import holiday_periods, prepare, read_table
from common.model import ModelConfig, build_model, load_vector, model_vector
from common.training import TrainConfig, mean_from_quantiles, predict_scaled, train_local
from common.windows import SeriesStats, WindowSet, build_windows, series_stats

DEMAND_FILE, MAP_FILE, QUARANTINE_FILE = "demand.parquet", "series_map.parquet", "quarantine.csv"
MODEL_FILE = "global_model.pt"


def prepare_node(cfg: NodeConfig) -> dict[str, int]:
    """Run the data pipeline and write its outputs under private/. Return quarantine counts."""
    secret = load_or_create_secret(cfg.private_dir)
    prepared = prepare(read_table(cfg.data.path), cfg.data, secret)
    cfg.private_dir.mkdir(parents=True, exist_ok=True)
    prepared.panel.to_parquet(cfg.private_dir / DEMAND_FILE, index=False)
    key_map = prepared.key_map.assign(ended=prepared.key_map["series"].isin(prepared.ended))
    key_map.to_parquet(cfg.private_dir / MAP_FILE, index=False)
    prepared.quarantine.to_csv(cfg.private_dir / QUARANTINE_FILE, index=False)
    counts = prepared.counts()
    counts["series"] = int(prepared.panel["series"].nunique())
    counts["periods"] = len(prepared.panel)
    counts["dropped_columns"] = len(prepared.deid.dropped)
    return counts


def load_panel(cfg: NodeConfig) -> pd.DataFrame:
    path = cfg.private_dir / DEMAND_FILE
    if not path.is_file() or path.stat().st_mtime < cfg.data.path.stat().st_mtime:
        prepare_node(cfg)
    return pd.read_parquet(path)


@dataclass
class NodeData:
    """The node's panel split at its hold-out cutoff, with the statistics the model needs."""

    panel: pd.DataFrame
    train: pd.DataFrame
    stats: SeriesStats
    cutoff: pd.Timestamp

    @classmethod
    def load(cls, cfg: NodeConfig, horizon: int) -> NodeData:
        panel = load_panel(cfg)
        dates = np.sort(panel["date"].unique())
        if len(dates) <= horizon:
            raise ValueError(f"{cfg.name}: {len(dates)} periods of history, need more than {horizon}")
        cutoff = pd.Timestamp(dates[-horizon - 1])
        train = panel[panel["date"] <= cutoff]
        return cls(panel, train, series_stats(train, cfg.data.static), cutoff)

    def train_windows(self, m: ModelConfig) -> WindowSet:
        return build_windows(self.train, self.stats, m.lookback, m.horizon)

    def holdout_windows(self, m: ModelConfig) -> WindowSet:
        """One window per live series whose horizon is the node's last H periods (never trained on)."""
        last = self.panel.groupby("series")["date"].max()
        alive = last.index[(last == self.panel["date"].max()) & last.index.isin(self.stats.scale.index)]
        live = self.panel[self.panel["series"].isin(alive)]
        return build_windows(live, self.stats, m.lookback, m.horizon, origins="last")


def local_update(
    data: NodeData, m: ModelConfig, t: TrainConfig, global_vector: np.ndarray | None, seed: int
) -> tuple[np.ndarray, int, float]:
    """Start from the global model (or the seeded initial one); return (weights, n, train loss)."""
    model = build_model(m, seed)
    if global_vector is not None:
        load_vector(model, global_vector)
    windows = data.train_windows(m)
    loss = train_local(model, windows, t, seed)
    return model_vector(model), len(windows), loss


def seasonal_naive(panel: pd.DataFrame, series: list[str], horizon: int, season: int) -> np.ndarray:
    """[S, H] forecasts of each series' last H periods: ŷ(T+h) = y(T+h − m·(1 + ⌊(h−1)/m⌋))."""
    by_series = panel.sort_values("date").groupby("series")["demand"]
    h = np.arange(1, horizon + 1)
    back = season * (1 + (h - 1) // season)
    out = np.zeros((len(series), horizon))
    for i, s in enumerate(series):
        hist = by_series.get_group(s).to_numpy()[:-horizon]
        idx = len(hist) - back + (h - 1)
        out[i] = np.where(idx >= 0, hist[np.clip(idx, 0, None)], hist.mean())
    return out


def holdout_metrics(data: NodeData, m: ModelConfig, vector: np.ndarray, season: int) -> dict[str, float]:
    """Sums (not means) over the hold-out window, so the coordinator can add them encrypted."""
    model = build_model(m, 0)
    load_vector(model, vector)
    windows = data.holdout_windows(m)
    scale = np.expm1(windows.log_scale)[:, None]
    scaled = predict_scaled(model, windows)
    target = windows.batch(np.arange(len(windows)))["target"]
    pred, actual = scaled * scale[..., None], target * scale
    naive = seasonal_naive(data.panel, windows.series, m.horizon, season)
    levels = m.quantiles
    lo, hi = (levels.index(0.1), levels.index(0.9)) if {0.1, 0.9} <= set(levels) else (0, -1)
    median = pred[..., levels.index(0.5)]
    return {
        "abs_err_model": float(np.abs(median - actual).sum()),
        "abs_err_naive": float(np.abs(naive - actual).sum()),
        "pinball_scaled": _pinball(scaled, target, levels),
        "covered_80": float(((actual >= pred[..., lo]) & (actual <= pred[..., hi])).sum()),
        "points": float(actual.size),
    }


def _pinball(pred: np.ndarray, actual: np.ndarray, levels: tuple[float, ...]) -> float:
    """Sum over points of the mean pinball loss across quantile levels."""
    diff = actual[..., None] - pred
    lv = np.asarray(levels)
    return float(np.maximum(lv * diff, (lv - 1) * diff).mean(-1).sum())


def save_global_model(cfg: NodeConfig, vector: np.ndarray, m: ModelConfig, server_round: int) -> Path:
    cfg.private_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.private_dir / MODEL_FILE
    torch.save(
        {
            "vector": torch.from_numpy(np.asarray(vector, dtype=np.float32)),
            "model_config": m.to_dict(),
            "round": server_round,
        },
        path,
    )
    return path


def load_global_model(cfg: NodeConfig):
    path = cfg.private_dir / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this node has not received a global model yet")
    blob = torch.load(path, weights_only=True)
    m = ModelConfig(**{**blob["model_config"], "quantiles": tuple(blob["model_config"]["quantiles"])})
    model = build_model(m, 0)
    load_vector(model, blob["vector"].numpy())
    return model, m, int(blob["round"])


def _future_rows(cfg: NodeConfig, data: NodeData, m: ModelConfig, live: list[str]) -> pd.DataFrame:
    """Placeholder horizon rows with known-future covariates: planned promo/price, holidays."""
    freq = cfg.data.period_freq
    last = data.panel["date"].max()
    dates = pd.period_range(pd.Period(last, freq) + 1, periods=m.horizon, freq=freq).end_time.normalize()
    last_rows = data.panel.sort_values("date").groupby("series").tail(1).set_index("series")
    fut = pd.DataFrame([(s, d) for s in live for d in dates], columns=["series", "date"])
    fut["demand"] = 0.0
    fut["price"] = fut["series"].map(last_rows["price"])
    fut["promo"] = 0.0
    fut["holiday"] = fut["date"].isin(holiday_periods(cfg.data)).astype(float)
    for col in cfg.data.static:
        fut[col] = fut["series"].map(last_rows[col])
    if cfg.data.future is not None:
        fut = _apply_plan(cfg, fut)
    return fut


def _apply_plan(cfg: NodeConfig, fut: pd.DataFrame) -> pd.DataFrame:
    """Overlay the node's planned promotions and prices (keys pseudonymised like the history)."""
    plan = read_table(cfg.data.future)
    secret = load_or_create_secret(cfg.private_dir)
    keys = list(cfg.data.series_keys)
    plan["series"] = [pseudonym(secret, s) for s in series_label(plan[keys])]
    plan["date"] = (
        pd.to_datetime(plan["date"], errors="coerce")
        .dt.to_period(cfg.data.period_freq)
        .dt.end_time.dt.normalize()
    )
    cols = {c: d for c, d in ((cfg.data.promo, "promo"), (cfg.data.price, "price")) if c and c in plan}
    plan = plan.rename(columns=cols)
    for col in cols.values():
        plan[col] = pd.to_numeric(plan[col], errors="coerce")
    agg = plan.groupby(["series", "date"])[list(cols.values())].agg(
        {"promo": "max", "price": "mean"} if len(cols) == 2 else "max"
    )
    merged = fut.join(agg, on=["series", "date"], rsuffix="_plan")
    for col in cols.values():
        merged[col] = merged[f"{col}_plan"].fillna(merged[col])
    return merged.drop(columns=[f"{c}_plan" for c in cols.values()])


def forecast(cfg: NodeConfig) -> pd.DataFrame:
    """Forecast the next H periods of every live series with the saved global model."""
    model, m, _ = load_global_model(cfg)
    data = NodeData.load(cfg, m.horizon)
    key_map = pd.read_parquet(cfg.private_dir / MAP_FILE)
    live = sorted(set(key_map.loc[~key_map["ended"], "series"]) & set(data.stats.scale.index))
    fut = _future_rows(cfg, data, m, live)
    extended = pd.concat([data.panel[data.panel["series"].isin(live)], fut], ignore_index=True)
    windows = build_windows(extended, data.stats, m.lookback, m.horizon, origins="last")
    scale = np.expm1(windows.log_scale)[:, None, None]
    pred = np.clip(predict_scaled(model, windows) * scale, 0.0, None)
    holdout = data.holdout_windows(m)
    rho = _path_correlation(model, holdout, m)
    rows = fut.set_index("series").loc[windows.series, "date"].to_numpy().reshape(len(windows), m.horizon)
    out = pd.DataFrame(
        {
            "node": cfg.name,
            "series": np.repeat(windows.series, m.horizon),
            "date": rows.ravel(),
            "mean": mean_from_quantiles(pred, m.quantiles).ravel(),
        }
    )
    for j, level in enumerate(m.quantiles):
        out[f"q{round(level * 100):02d}"] = pred[..., j].ravel()
    out["path_corr"] = rho
    names = key_map.set_index("series")
    out.insert(1, "sku", out["series"].map(names["sku"]).to_numpy())
    for k, col in enumerate(c for c in cfg.data.series_keys if c not in out.columns):
        out.insert(2 + k, col, out["series"].map(names[col]).to_numpy())
    return out.drop(columns=["series"])


def _path_correlation(model, holdout: WindowSet, m: ModelConfig) -> float:
    from common.inventory import horizon_correlation

    if len(holdout) == 0:
        return 0.5
    pred = predict_scaled(model, holdout)
    actual = holdout.batch(np.arange(len(holdout)))["target"]
    return horizon_correlation(pred, actual, m.quantiles)
