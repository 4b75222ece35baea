"""What this node has done, for ``fedstock-node status``: rounds, models, forecasts (NODE/out).

Written by the node's own process after each message it answers; read by the operator. It holds
no demand figures, only what a site operator needs to see that the node takes part. How well each
global model forecast this site's own hold-out window is kept apart, in NODE/private (``record_holdout``):
errors are in units of demand.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import NodeConfig
from common.evaluation import holdout_means
from common.files import owner_only, write_json_atomic

STATUS_FILE = "status.json"
HOLDOUT_FILE = "holdout.json"  # NODE/private: this site's hold-out scores of each global model
KEEP_EVENTS = 200


def status_path(cfg: NodeConfig) -> Path:
    return cfg.out_dir / STATUS_FILE


def model_fingerprint(weights: np.ndarray) -> str:
    """Same global model, same fingerprint at every site: operators can compare them."""
    return hashlib.sha256(np.asarray(weights, dtype=np.float32).tobytes()).hexdigest()[:16]


def read_status(cfg: NodeConfig) -> dict:
    path = status_path(cfg)
    if not path.is_file():
        return {"node": cfg.name, "events": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): remove it to start a new journal") from None


def record_holdout(cfg: NodeConfig, run: int | None, server_round: int, model: str, sums: dict) -> dict:
    """Note how the global model of a round scored on this site's hold-out window, beside seasonal
    naive (the same window, the same points); the sums are those the coordinator gets encrypted."""
    means = holdout_means(sums)
    entry = {
        "run": run,
        "round": server_round,
        "model": model,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: means[k] for k in ("mae", "naive_mae", "coverage_80")},
        "points": int(sums["points"]),
    }
    try:
        scores = read_holdout(cfg)
    except ValueError:  # a damaged score file must not stop the round: kept aside, started anew
        path = cfg.private_dir / HOLDOUT_FILE
        path.replace(path.with_suffix(".damaged"))
        scores = {"rounds": []}
    scores["rounds"] = [*scores["rounds"], entry][-KEEP_EVENTS:]
    with owner_only(cfg.private_dir) as private:
        write_json_atomic(private / HOLDOUT_FILE, scores)
    return entry


def read_holdout(cfg: NodeConfig) -> dict:
    path = cfg.private_dir / HOLDOUT_FILE
    if not path.is_file():
        return {"rounds": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): remove it to start the scores anew") from None


def record(cfg: NodeConfig, kind: str, **fields: object) -> dict:
    """Append one event and update the summary fields; the file is replaced atomically."""
    status = read_status(cfg)
    event = {"kind": kind, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
    status["node"] = cfg.name
    status["events"] = [*status.get("events", []), event][-KEEP_EVENTS:]
    if kind in ("train", "evaluate"):
        status["last_round"] = {k: event.get(k) for k in ("run", "round", "kind", "time")}
        status["rounds_answered"] = int(status.get("rounds_answered", 0)) + (kind == "train")
    if "model" in fields:
        status["last_model"] = {k: event.get(k) for k in ("model", "round", "run", "time")}
    if kind == "decide":  # the federation's decision, and the model this site now forecasts with
        status["last_decision"] = {
            k: event.get(k) for k in ("run", "round", "decision", "best-round", "stop-reason", "kept_model")
        }
    if kind == "forecast":
        shown = ("start", "end", "periods", "series", "time", "source", "source_reason", "forecast_model")
        status["last_forecast"] = {k: event.get(k) for k in shown}
    write_json_atomic(status_path(cfg), status)
    return status


def record_forecast(cfg: NodeConfig, frame: pd.DataFrame) -> dict:
    """Note a forecast the node wrote: its dates, how many series, and what made it (the global
    model, or the fallback baseline and why: warehouse_node/fallback.py); no demand figures."""
    dates = sorted(frame["date"].unique())
    source = {"source": str(frame["source"].iloc[0]), "source_reason": str(frame["source_reason"].iloc[0])}
    return record(
        cfg,
        "forecast",
        start=str(dates[0])[:10] if dates else "-",
        end=str(dates[-1])[:10] if dates else "-",
        periods=len(dates),
        series=int(frame["sku"].nunique()),
        **(source if "source" in frame and len(frame) else {}),
    )
