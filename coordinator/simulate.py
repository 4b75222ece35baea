"""Simulated federations on the shared public datasets, one process, four training modes.

* ``he`` (default): every node through the real ServerApp/ClientApp (in-process grid, protobuf
  round trips) with CKKS aggregation: what a deployment runs.
* ``plain``: the same rounds, the same node code, seeds and schedule, averaged in plaintext (the
  reference that shows what encryption costs in accuracy).
* ``local``: every node trains alone with the same budget and forecasts with its own model.
* ``central``: all nodes' windows pooled into one model with the same budget (the upper bound a
  federation is compared with; it needs the data in one place, which our users cannot do).

Every mode prepares the nodes through the node pipeline (de-identification included) and forecasts
through ``warehouse_node.pipeline.forecast``: each node maps its pseudonyms back to its own keys.
The training budget is the same in every mode: ``rounds × local_epochs`` passes of at most
``max_batches`` batches per node.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from common import crypto
from common.config import NodeConfig, load_node_config
from common.model import build_model, model_vector
from common.network import group_label
from common.public_data import DATASETS, WRITERS, load_sales, to_dataset_columns
from common.training import TrainConfig, train_local, training_device
from common.windows import WindowSet, concat_windows
from coordinator.demo import provision_node
from coordinator.planner import round_metrics
from warehouse_node.federated import (
    RoundSettings,
    adopt_profile,
    round_settings,
    round_update,
    site_history,
)
from warehouse_node.pipeline import NodeData, forecast, prepare_node, save_global_model

Report = Callable[[str], None]
MODES = ("he", "plain", "local", "central")
TORCH_THREADS = 2  # one node trains at a time in-process: let it use both cores

# Model and training settings per dataset (tuned on the training history only; see BENCHMARKS.md).
PRESETS: dict[str, dict[str, object]] = {
    "walmart": {
        "lookback": 26,
        "horizon": 13,
        "hidden": 32,
        "heads": 4,
        "anchor": "seasonal",
        "local-epochs": 1,
        "max-batches": 12,
        "batch-size": 256,
        "learning-rate": 0.001,
        "scale-weight": 1.0,
        # cross-site denoising of last season (common/denoise.py), chosen on origins before the
        # benchmark window (BENCHMARKS.md, "Cross-site denoising"); groups: the departments
        "denoise-rank": 10,
        "denoise-shrink": 0.5,
        "denoise-periods": 104,
        "denoise-min-sites": 5,
        # last season's shape averaged with the season before's, re-levelled (common/windows.py);
        # chosen at 2012-01-27, the one earlier origin where two seasons exist (BENCHMARKS.md notes)
        "season-blend": 0.3,
    },
    "store_item": {
        "lookback": 56,
        "horizon": 90,
        "hidden": 32,
        "heads": 4,
        "anchor": "level",
        "local-epochs": 1,
        "max-batches": 8,
        "batch-size": 256,
        "learning-rate": 0.004,
        "scale-weight": 0.0,
    },
}


@dataclass(frozen=True)
class SimulationSettings:
    dataset: str
    data: Path
    mode: str = "he"
    rounds: int = 6
    seed: int = 7
    until: str | None = None  # cut the history here (benchmarks hold out what follows)
    overrides: tuple[tuple[str, object], ...] = ()
    device: str = "cpu"  # every simulated node's [training] device, and centralized training's

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.dataset not in PRESETS:
            raise ValueError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(PRESETS)}")
        training_device(self.device)  # a missing GPU fails before any node is written

    def run_config(self, out: Path) -> dict[str, object]:
        preset = PRESETS[self.dataset]
        groups = {}
        if preset.get("denoise-rank"):  # the departments every store may hold
            key = DATASETS[self.dataset].keys[1]
            values = load_sales(self.dataset, self.data)[key].map(group_label).unique()
            groups = {"network-group": key, "network-groups": ",".join(sorted(values, key=_natural))}
        config = {
            **preset,
            **groups,
            **dict(self.overrides),
            "num-rounds": self.rounds,
            "min-nodes": 1,
            "seed": self.seed,
            "validation-periods": 0,  # the final fit: train on all the history given
            "public-context": str(out / "keys" / crypto.PUBLIC_CONTEXT_FILE),
            "checkpoint-dir": str(out / "checkpoints"),
        }
        if config.get("dp-clip"):  # the privacy accounting covers the model updates only
            config["denoise-rank"] = 0
        return config


def _natural(label: str) -> tuple[int, str]:
    return (len(label), label)


def prepare_nodes(s: SimulationSettings, out: Path, report: Report) -> list[NodeConfig]:
    """Write one node folder per site, give each the key, run the node data pipeline."""
    dirs = WRITERS[s.dataset](s.data, out / "nodes", s.until)  # fails early on a bad dataset
    fingerprint = crypto.keygen(out / "keys")
    report(f"{len(dirs)} node folders written; keys generated, fingerprint {fingerprint}")
    configs, totals = [], Counter()
    for d in dirs:
        provision_node(d, out / "keys", fingerprint)
        if s.device != "cpu":  # as an operator would: in node.toml, which the ClientApp reads too
            with open(d / "node.toml", "a", encoding="utf-8") as toml:
                toml.write(f'\n[training]\ndevice = "{s.device}"\n')
        cfg = load_node_config(d)
        totals.update(prepare_node(cfg))
        configs.append(cfg)
    series, periods = totals.pop("series"), totals.pop("periods")
    totals.pop("dropped_columns", None)
    report(
        f"{len(configs)} nodes prepared: {series} series, {periods} periods; quarantined rows by "
        f"reason (each node's private/quarantine.csv): {dict(totals.most_common())}"
    )
    return configs


def _settings(rc: dict, server_round: int = 0) -> RoundSettings:
    return round_settings({**rc, "server-round": server_round})


def run_he(nodes: list[NodeConfig], rc: dict, report: Report) -> None:
    from coordinator.inprocess import run_inprocess
    from coordinator.server_app import app as server_app
    from warehouse_node.client_app import app as client_app

    rc = {**rc, "min-nodes": len(nodes)}
    messages = {"n": 0}
    # train + evaluate per round, the profile's three steps, the network forecast's query
    steps = 2 * int(rc["num-rounds"]) + 3 * bool(rc.get("denoise-rank")) + bool(rc.get("network-forecast"))
    total = steps * len(nodes)

    def progress(line: str) -> None:
        messages["n"] += 1
        if messages["n"] % len(nodes) == 0:
            report(f"{messages['n']}/{total} node messages ({line})")

    dirs = [c.folder for c in nodes]
    run_inprocess(server_app, client_app, dirs, rc, progress=progress, torch_threads=TORCH_THREADS)


def plaintext_profile(nodes: list[NodeConfig], rc: dict, report: Report) -> dict:
    """The he mode's cross-site profile, summed in plaintext (plain and central modes)."""
    s = _settings({**rc, "round-nodes": len(nodes)})
    if not s.denoise.enabled:
        return rc
    histories = [site_history(cfg, s)[0] for cfg in nodes]
    counts = sum(h.site_groups(len(s.denoise.groups)) for h in histories)
    summed = sum(h.moments(s.denoise, counts) for h in histories)
    profile_id = "plain-" + hashlib.sha256(np.asarray(summed).tobytes()).hexdigest()[:10]
    for cfg in nodes:
        profile = adopt_profile(cfg, s, summed, profile_id)
    report(f"cross-site profile {profile_id}: {int((profile.sites > 0).sum())} groups shared")
    return {**rc, "denoise-id": profile_id}


def run_plain(nodes: list[NodeConfig], rc: dict, report: Report) -> None:
    rc = plaintext_profile(nodes, rc, report)
    weights: np.ndarray | None = None
    for r in range(1, int(rc["num-rounds"]) + 1):
        s = _settings(rc, r)
        total, n_sum = 0.0, 0
        for cfg in nodes:
            data = NodeData.load(cfg, s.model.horizon, s.validation, s.model.denoise)
            _, new, n, _ = round_update(cfg, data, s, weights)
            total, n_sum = total + n * new, n_sum + n
        weights = total / n_sum
        report(f"round {r}: plaintext average of {len(nodes)} nodes")
    for cfg in nodes:
        save_global_model(cfg, weights, s.model, int(rc["num-rounds"]))


def _whole_run(s: RoundSettings, rounds: int, batches: int) -> TrainConfig:
    return replace(s.train, epochs=s.train.epochs * rounds, max_batches_per_epoch=batches, progress=(0, 1))


def run_local(nodes: list[NodeConfig], rc: dict, report: Report) -> None:
    """Each store alone: no cross-site profile either (it needs the other sites)."""
    s, rounds = _settings({**rc, "denoise-rank": 0}), int(rc["num-rounds"])
    for cfg in nodes:
        data = NodeData.load(cfg, s.model.horizon, s.validation)
        model = build_model(s.model, s.seed)
        budget = _whole_run(s, rounds, s.train.max_batches_per_epoch)
        train_local(model, data.train_windows(s.model), budget, s.seed, device=cfg.training_device)
        save_global_model(cfg, model_vector(model), s.model, rounds)
        report(f"{cfg.name}: trained alone")


def pooled_windows(nodes: list[NodeConfig], rc: dict, report: Report) -> tuple[RoundSettings, WindowSet, int]:
    """Every node's training windows in one set (what centralized training sees), the settings,
    and the batches per epoch that match the federation's budget."""
    s = _settings(plaintext_profile(nodes, rc, report))
    loaded = [NodeData.load(c, s.model.horizon, s.validation, s.model.denoise) for c in nodes]
    sets = [d.train_windows(s.model) for d in loaded]
    batches = sum(min(-(-len(w) // s.train.batch_size), s.train.max_batches_per_epoch) for w in sets)
    pooled = concat_windows(sets)
    report(f"pooled {len(pooled)} windows of {len(nodes)} nodes; {batches} batches per epoch")
    return s, pooled, batches


def run_central(nodes: list[NodeConfig], rc: dict, report: Report) -> None:
    (s, pooled, batches), rounds = pooled_windows(nodes, rc, report), int(rc["num-rounds"])
    model = build_model(s.model, s.seed)
    device = nodes[0].training_device  # the simulation's one device (SimulationSettings.device)
    train_local(model, pooled, _whole_run(s, rounds, batches), s.seed, device=device)
    vector = model_vector(model)
    for cfg in nodes:
        save_global_model(cfg, vector, s.model, rounds)


RUNNERS = {"he": run_he, "plain": run_plain, "local": run_local, "central": run_central}


def train_and_forecast(
    nodes: list[NodeConfig], s: SimulationSettings, out: Path, report: Report
) -> pd.DataFrame:
    """Train in ``s.mode`` over prepared nodes (keys in ``out/keys``); return dataset-shaped forecasts."""
    started = time.monotonic()
    rc = s.run_config(out)
    if rc.get("denoise-rank") and len(nodes) < int(rc.get("denoise-min-sites", 5)):
        report(f"cross-site denoising off: {len(nodes)} sites, fewer than denoise-min-sites")
        rc["denoise-rank"] = 0
    RUNNERS[s.mode](nodes, rc, report)
    report(f"{s.mode} training done in {time.monotonic() - started:.0f}s; forecasting")
    frames = [forecast(cfg, include_ended=True) for cfg in nodes]
    return to_dataset_columns(s.dataset, pd.concat(frames, ignore_index=True))


def simulate(out: Path, s: SimulationSettings, report: Report) -> pd.DataFrame:
    """Run one simulation into ``out``; write and return ``forecasts.parquet``."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose another --out or remove it")
    nodes = prepare_nodes(s, out, report)
    result = train_and_forecast(nodes, s, out, report)
    result.to_parquet(out / "forecasts.parquet", index=False)
    if s.mode == "he":
        key = crypto.load_context(out / "keys" / crypto.SECRET_CONTEXT_FILE)
        round_metrics(out / "checkpoints", key).to_csv(out / "rounds.csv", index=False)
    horizon = DATASETS[s.dataset].horizon
    report(f"{len(result)} forecast rows ({len(result) // horizon} series × {horizon} periods)")
    return result
