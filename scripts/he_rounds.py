"""Round wall time through the real apps, CKKS vs plain Flower FedAvg, and the 100-node scale run.

Both federations run in one process on the in-process grid (every message round-tripped through
protobuf), nodes one after another: a round's wall time is the nodes' summed work plus the
coordinator's. The grid stamps when each phase is sent and answered; the gaps are coordinator time.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flwr.app import Message  # noqa: E402

from common import crypto  # noqa: E402
from common.config import load_node_config  # noqa: E402
from common.synthetic import SyntheticSpec, write_warehouse  # noqa: E402
from coordinator.planner.inprocess import InProcessGrid, run_inprocess  # noqa: E402
from coordinator.planner.provision import provision_node  # noqa: E402
from coordinator.planner.simulate import PRESETS, SimulationSettings, prepare_nodes  # noqa: E402
from warehouse_node.pipeline import prepare_node  # noqa: E402

Say = Callable[[str], None]
ROUNDS = 2  # round 2 is timed: it has every step (decrypt the global model, train, encrypt, sum, evaluate)
QUICK_RUN = {"local-epochs": 1, "max-batches": 8, "lookback": 21, "horizon": 14, "hidden": 16, "seed": 3}


class TimedGrid(InProcessGrid):
    """Records (phase, sent, answered) for every send_and_receive, and the bytes of every reply."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs, observer=self._count)
        self.phases: list[tuple[str, float, float]] = []
        self.reply_bytes: list[tuple[str, int]] = []

    def _count(self, msg: Message, blob: bytes) -> None:
        self.reply_bytes.append((msg.metadata.message_type, len(blob)))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        messages = list(messages)
        sent = time.perf_counter()
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.phases.append((messages[0].metadata.message_type if messages else "", sent, time.perf_counter()))
        return replies


def _last_round(grid: TimedGrid, ended: float, nodes: int) -> dict:
    (_, t_sent, t_done), (_, e_sent, e_done) = [p for p in grid.phases if p[0] in ("train", "evaluate")][-2:]
    train_replies = [b for kind, b in grid.reply_bytes if kind == "train"][-nodes:]
    return {
        "round_s": ended - t_sent,
        "coordinator_s": (e_sent - t_done) + (ended - e_done),
        "reply_mb": sum(train_replies) / 1e6,
    }


def run_round(mode: str, dirs: list[Path], rc: dict, work: Path) -> dict:
    """Run ROUNDS rounds in ``mode`` ('ckks' or 'plain'); return the last round's timings."""
    if mode == "ckks":
        from coordinator.server_app import app as server
        from warehouse_node.client_app import app as client
    else:
        from scripts.plaintext_fedavg import client, server
    ckpt = work / f"checkpoints-{mode}"
    shutil.rmtree(ckpt, ignore_errors=True)
    rc = {**rc, "num-rounds": ROUNDS, "min-nodes": len(dirs), "checkpoint-dir": str(ckpt)}
    holder: dict[str, TimedGrid] = {}

    def grid(*args, **kwargs) -> TimedGrid:
        holder["grid"] = TimedGrid(*args, **kwargs)
        return holder["grid"]

    run_inprocess(server, client, dirs, rc, torch_threads=2, grid_class=grid)
    return _last_round(holder["grid"], time.perf_counter(), len(dirs))


def synthetic_nodes(work: Path, count: int, spec: SyntheticSpec, say: Say) -> tuple[list[Path], Path]:
    keys = work / "keys"
    fingerprint = crypto.keygen(keys)
    dirs = []
    for i in range(count):
        d = work / "nodes" / f"warehouse-{i:03d}"
        write_warehouse(d, i, spec, seed=11)
        provision_node(d, keys, fingerprint)
        prepare_node(load_node_config(d))
        dirs.append(d)
        if (i + 1) % 10 == 0:
            say(f"{i + 1}/{count} synthetic nodes prepared")
    return dirs, keys


def round_times(data_root: Path, work: Path, counts: tuple[int, ...], repeats: int, quick: bool, say: Say):
    """Per node count: median round-2 wall time of each mode over interleaved repeats."""
    if quick:
        small = SyntheticSpec(items=5, days=300, horizon_days=28, customers=40)
        dirs, keys = synthetic_nodes(work, max(counts), small, say)
        base = dict(QUICK_RUN)
    else:
        settings = SimulationSettings("walmart", data_root / "walmart", until="2012-04-27", rounds=ROUNDS)
        dirs = [c.folder for c in prepare_nodes(settings, work, say)]
        keys, base = work / "keys", {**PRESETS["walmart"], "seed": 7}
    base["public-context"] = str(keys / crypto.PUBLIC_CONTEXT_FILE)
    rows = []
    for count in counts:
        runs: dict[str, list[dict]] = {"plain": [], "ckks": []}
        for rep in range(repeats):
            for mode in ("plain", "ckks") if rep % 2 == 0 else ("ckks", "plain"):
                runs[mode].append(run_round(mode, dirs[:count], base, work))
                say(f"{count} nodes, repeat {rep + 1}, {mode}: round {runs[mode][-1]['round_s']:.1f}s")
        med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
        rows.append(
            {
                "nodes": count,
                "plain_s": round(med["plain"]["round_s"], 2),
                "ckks_s": round(med["ckks"]["round_s"], 2),
                "ratio": round(med["ckks"]["round_s"] / med["plain"]["round_s"], 3),
                "ckks_coordinator_s": round(med["ckks"]["coordinator_s"], 3),
                "plain_coordinator_s": round(med["plain"]["coordinator_s"], 3),
                "ckks_reply_mb": round(med["ckks"]["reply_mb"], 2),
                "plain_reply_mb": round(med["plain"]["reply_mb"], 2),
                "repeats": repeats,
            }
        )
    return rows


def scale_run(work: Path, nodes: int, say: Say) -> dict:
    """``nodes`` synthetic warehouses (default spec, PII in raw orders), CKKS, end to end."""
    t0 = time.perf_counter()
    dirs, keys = synthetic_nodes(work, nodes, SyntheticSpec(), say)
    prepared = time.perf_counter() - t0
    rc = {
        "local-epochs": 1,
        "max-batches": 12,
        "seed": 7,
        "public-context": str(keys / crypto.PUBLIC_CONTEXT_FILE),
    }
    last = run_round("ckks", dirs, rc, work)
    forecasts = _forecast_all(dirs)
    return {
        "nodes": nodes,
        "prepare_s": round(prepared, 1),
        "round_2_s": round(last["round_s"], 1),
        "per_node_s": round(last["round_s"] / nodes, 2),
        "coordinator_s": round(last["coordinator_s"], 2),
        "replies_held_mb": round(last["reply_mb"], 1),
        "forecast_rows": forecasts,
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3),
    }


def _forecast_all(dirs: list[Path]) -> int:
    from warehouse_node.pipeline import forecast

    return sum(len(forecast(load_node_config(d))) for d in dirs)
