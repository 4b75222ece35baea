"""What the planner (a secret-key holder) reads from the coordinator's encrypted checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from common import crypto
from common.network import DEFAULT_DEPENDENCE, MIN_SITES, Layout, NetworkError, from_digits, network_table
from common.records import EVAL_METRICS, STATE_TAIL
from coordinator.strategy import NETWORK_FILE, NETWORK_META, PROGRESS_FILE


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


def run_status(run_dir: Path, key: crypto.KeyContext) -> dict:
    """Rounds done and planned, who answered each round, and the decrypted aggregate losses."""
    done = progress(run_dir)
    if done and done.get("fingerprint") != key.fingerprint:
        raise crypto.KeyMismatchError(f"run {run_dir.name} was made under key {done.get('fingerprint')}")
    metrics = round_metrics(run_dir, key) if done else pd.DataFrame()
    by_round = {int(r["round"]): r for r in metrics.to_dict("records")}
    rounds = []
    for r in sorted({h["round"] for h in done.get("history", [])}):
        phases = {h["phase"]: h for h in done["history"] if h["round"] == r}
        m = by_round.get(r, {})
        rounds.append(
            {
                "round": r,
                "trained": phases.get("train", {}).get("nodes", []),
                "evaluated": phases.get("evaluate", {}).get("nodes", []),
                "refused": [line for h in phases.values() for line in h.get("refused", [])],
                "decision": phases.get("decide", {}).get("decision"),
                "train_loss": _finite(m.get("train_pinball")),
                "validation_loss": _finite(m.get("holdout_pinball")),
                "validation_mae": _finite(m.get("holdout_mae")),
                "naive_mae": _finite(m.get("naive_mae")),
            }
        )
    meta_path = run_dir / NETWORK_META
    network = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    outcome = done.get("outcome", {})
    return {
        "run": run_dir.name,
        "rounds_done": done.get("last_round", 0),
        "rounds_planned": done.get("planned_rounds"),
        "best_round": outcome.get("best_round"),  # the round whose model the sites forecast with
        "stop_reason": outcome.get("reason"),
        "rounds": rounds,
        "network_forecast": None if network is None else {k: network.get(k) for k in ("status", "sites")},
    }


def _finite(value: object) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def network_forecast(
    run_dir: Path,
    key: crypto.KeyContext,
    min_sites: int = MIN_SITES,
    dependence: str = DEFAULT_DEPENDENCE,
) -> pd.DataFrame:
    """Decrypt the network totals of a run, only if they sum at least ``min_sites`` sites."""
    if min_sites < MIN_SITES:
        raise NetworkError(f"the minimum of sites is at least {MIN_SITES}, got {min_sites}")
    meta_path = Path(run_dir) / NETWORK_META
    if not meta_path.is_file():
        raise NetworkError(f"run {Path(run_dir).name} has no network forecast (run with network-forecast)")
    meta = json.loads(meta_path.read_text())
    if meta.get("status") != "summed":
        raise NetworkError(f"the coordinator summed no network forecast: {meta.get('reason', 'unknown')}")
    if int(meta["sites"]) < min_sites:
        raise NetworkError(f"a sum over {meta['sites']} sites is refused: the minimum is {min_sites}")
    vec = crypto.EncryptedVector.from_bytes((Path(run_dir) / NETWORK_FILE).read_bytes())
    if vec.fingerprint != key.fingerprint:
        raise crypto.KeyMismatchError(f"network sum made under key {vec.fingerprint}")
    layout = Layout(str(meta["group_by"]), tuple(meta["groups"]), len(meta["dates"]))
    totals = from_digits(crypto.decrypt(key, vec), layout.cells)
    sites = round(totals[-1])  # counted inside the ciphertext: the coordinator cannot inflate it
    if sites != int(meta["sites"]) or sites < min_sites:
        raise NetworkError(
            f"the sum holds {sites} sites, the coordinator reported {meta['sites']}: refused, nothing shown"
        )
    return network_table(totals, layout, meta["dates"], dependence)


def fan_chart(frame: pd.DataFrame, path: Path, max_groups: int = 6) -> Path:
    """PNG: per group (the total first, then the largest), mean with 50/80/90% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = frame.groupby("group", sort=False)["mean"].sum()
    groups = ["total", *order.drop("total", errors="ignore").sort_values(ascending=False).index]
    groups = groups[:max_groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.6 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        g = frame[frame["group"] == group]
        for lo, hi, alpha in (("q05", "q95", 0.15), ("q10", "q90", 0.25), ("q25", "q75", 0.4)):
            ax.fill_between(g["date"], g[lo], g[hi], color="tab:blue", alpha=alpha, linewidth=0)
        ax.plot(g["date"], g["mean"], color="tab:blue", label="mean")
        ax.set_title(f"{group}: {int(g['sites'].iloc[0])} sites, dependence {g['dependence'].iloc[0]}")
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
