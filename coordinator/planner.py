"""What the planner (a secret-key holder) reads from the coordinator's encrypted checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from common import crypto
from common.records import EVAL_METRICS, STATE_TAIL
from coordinator.strategy import PROGRESS_FILE


def _read(key: crypto.KeyContext, path: Path) -> list[float]:
    return crypto.decrypt(key, crypto.EncryptedVector.from_bytes(path.read_bytes())).tolist()


def round_metrics(checkpoint_dir: Path, key: crypto.KeyContext) -> pd.DataFrame:
    """Per round: weighted train loss, and hold-out MAE of the model vs seasonal naive, coverage."""
    rows = []
    for path in sorted(Path(checkpoint_dir).glob("round_*.state.ckks")):
        r = int(path.name.split("_")[1].split(".")[0])
        train = dict(zip(STATE_TAIL, _read(key, path)[-len(STATE_TAIL) :], strict=True))
        row = {"round": r, "train_pinball": train["weight_x_train_pinball"] / train["weight"]}
        eval_path = path.with_name(f"round_{r:04d}.eval_metrics.ckks")
        if eval_path.is_file():
            ev = dict(zip(EVAL_METRICS, _read(key, eval_path), strict=True))
            points = max(ev["points"], 1.0)
            row.update(
                {
                    "nodes": round(ev["nodes"]),
                    "holdout_mae": ev["abs_err_model"] / points,
                    "naive_mae": ev["abs_err_naive"] / points,
                    "mae_vs_naive": ev["abs_err_model"] / max(ev["abs_err_naive"], 1e-12),
                    "holdout_pinball": ev["pinball_scaled"] / points,
                    "coverage_80": ev["covered_80"] / points,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def progress(checkpoint_dir: Path) -> dict:
    path = Path(checkpoint_dir) / PROGRESS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
