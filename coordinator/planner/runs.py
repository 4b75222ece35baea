"""What the planner reads of a run: the coordinator's progress and the sums the sites opened.

The planner holds no secret key: every number here is an aggregate over sites that the sites
decrypted and published (coordinator/publish.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from common import crypto
from common.network import DEFAULT_DEPENDENCE, MIN_SITES, Layout, NetworkError, network_table
from coordinator.checkpoints import NETWORK_META, PROGRESS_FILE

STARTED_FILE = "started.json"  # RUNS/RUN_ID: written by `fedstock-planner run` when it submits


def progress(checkpoint_dir: Path) -> dict:
    path = Path(checkpoint_dir) / PROGRESS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def round_metrics(checkpoint_dir: Path) -> pd.DataFrame:
    """Per round, from the sums the sites opened (coordinator/publish.py): the training loss, and
    the hold-out MAE of the model against seasonal naive, its pinball loss and 80% coverage."""
    rows = []
    for h in progress(checkpoint_dir).get("history", []):
        m = h.get("metrics") if h.get("phase") == "publish" else None
        if not m:
            continue
        ratio = m["holdout_mae"] / m["naive_mae"] if m["naive_mae"] > 0 else float("nan")
        rows.append({"round": int(h["round"]), **m, "nodes": round(m["nodes"]), "mae_vs_naive": ratio})
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates("round", keep="last") if len(frame) else frame


def run_status(run_dir: Path, fingerprint: str | None = None) -> dict:
    """Rounds done and planned, who answered each round, and the aggregate metrics the sites
    opened. ``fingerprint``: the planner's keys.json; a run made under another key is refused."""
    done = progress(run_dir)
    if done and fingerprint and done.get("fingerprint") != fingerprint:
        raise crypto.KeyMismatchError(f"run {run_dir.name} was made under key {done.get('fingerprint')}")
    metrics = round_metrics(run_dir) if done else pd.DataFrame()
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
                "opened_by": phases.get("publish", {}).get("replies"),
            }
        )
    meta_path = run_dir / NETWORK_META
    network = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    outcome = done.get("outcome", {})
    started_path = run_dir / STARTED_FILE
    started = json.loads(started_path.read_text()) if started_path.is_file() else None
    return {
        "run": run_dir.name,
        "started": started,  # written by `fedstock-planner run` as it submits the run
        "rounds_done": done.get("last_round", 0),
        "rounds_planned": done.get("planned_rounds") or (started or {}).get("rounds"),
        "best_round": outcome.get("best_round"),  # the round whose model the sites forecast with
        "stop_reason": outcome.get("reason"),
        "rounds": rounds,
        "network_forecast": None if network is None else {k: network.get(k) for k in ("status", "sites")},
    }


def _finite(value: object) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def network_forecast(
    run_dir: Path, min_sites: int = MIN_SITES, dependence: str = DEFAULT_DEPENDENCE
) -> pd.DataFrame:
    """The network totals of a run as the sites opened them, only if they sum ``min_sites`` sites."""
    if min_sites < MIN_SITES:
        raise NetworkError(f"the minimum of sites is at least {MIN_SITES}, got {min_sites}")
    meta_path = Path(run_dir) / NETWORK_META
    if not meta_path.is_file():
        raise NetworkError(f"run {Path(run_dir).name} has no network forecast (run with network-forecast)")
    meta = json.loads(meta_path.read_text())
    if meta.get("status") != "opened":
        raise NetworkError(f"no network forecast was opened by the sites: {meta.get('reason', 'unknown')}")
    layout = Layout(str(meta["group_by"]), tuple(meta["groups"]), len(meta["dates"]))
    totals = np.asarray(meta["totals"], dtype=np.float64)
    if len(totals) != layout.cells:
        raise NetworkError(f"network.json holds {len(totals)} totals, its layout {layout.cells}: refused")
    sites = round(totals[-1])  # counted inside the ciphertext the sites opened
    if sites != int(meta["sites"]) or sites < min_sites:
        raise NetworkError(
            f"the sum holds {sites} sites, the coordinator reported {meta['sites']}; the minimum is "
            f"{min_sites}: refused, nothing shown"
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
