"""What this node has done, for ``fedstock-node status``: rounds, models, forecasts (NODE/out).

Written by the node's own process after each message it answers; read by the operator. It holds
no demand figures, only what a site operator needs to see that the node takes part.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import NodeConfig

STATUS_FILE = "status.json"
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
    if kind == "forecast":
        status["last_forecast"] = {k: event.get(k) for k in ("start", "end", "periods", "series", "time")}
    path = status_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")
    tmp.replace(path)
    return status


def record_forecast(cfg: NodeConfig, frame: pd.DataFrame) -> dict:
    """Note a forecast the node wrote: its dates and how many series (no demand figures)."""
    dates = sorted(frame["date"].unique())
    return record(
        cfg,
        "forecast",
        start=str(dates[0])[:10],
        end=str(dates[-1])[:10],
        periods=len(dates),
        series=int(frame["sku"].nunique()),
    )
