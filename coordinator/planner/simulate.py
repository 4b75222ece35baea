"""Simulated federations on the shared public datasets, one process, four training modes.

* ``he`` (default): every node through the real ServerApp/ClientApp (in-process grid, protobuf
  round trips) with CKKS aggregation: what a deployment runs.
* ``plain``: the same rounds, the same node code, seeds and schedule, averaged in plaintext (the
  reference that shows what encryption costs in accuracy).
* ``local``: every node trains alone and forecasts with its own model.
* ``central``: all nodes' windows pooled into one model (the upper bound a federation is compared
  with; it needs the data in one place, which our users cannot do).

Every mode prepares the nodes through the node pipeline (de-identification included) and forecasts
through ``warehouse_node.pipeline.forecast``: each node maps its pseudonyms back to its own keys.
Every mode holds out the last horizon of the history, trains round after round until its own
validation score on it stops improving (common/stopping.py; the preset's cap, patience and minimum
improvement) and keeps its best round's model (coordinator/planner/reference_modes.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from common import crypto
from common.config import NodeConfig, load_node_config
from common.deid import seed_simulated_secret
from common.files import check_output, write_json_atomic
from common.network import group_label
from common.public_data import DATASETS, WRITERS, load_sales, to_dataset_columns
from common.settings import Settings, load_run_config, with_defaults
from common.training import training_device
from coordinator.checkpoints import PROGRESS_FILE
from coordinator.planner.provision import site_keys
from coordinator.planner.reference_modes import Outcome, Report, run_central, run_local, run_plain
from coordinator.planner.runs import round_metrics
from warehouse_node.node import Node
from warehouse_node.pipeline import forecast

MODES = ("he", "plain", "local", "central")
OUTCOME_FILE = "outcome.json"  # RUN_DIR: how training ended (rounds, best round, reason, seconds)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
# Model and training settings per dataset: run-config files over the app's defaults (chosen on the
# training history only; see BENCHMARKS.md).
PRESETS = {name: load_run_config(PRESET_DIR / f"{name}.toml") for name in ("walmart", "store_item")}


@dataclass(frozen=True)
class SimulationSettings:
    dataset: str
    data: Path
    mode: str = "he"
    rounds: int | None = None  # the round cap; None: the preset's
    seed: int | None = None  # None: the run config's
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
        config = with_defaults(
            {
                **preset,
                **groups,
                **dict(self.overrides),
                **({} if self.seed is None else {"seed": self.seed}),
                "num-rounds": self.rounds or preset["num-rounds"],
                "min-nodes": 1,
                "validation-periods": -1,  # the last horizon is held out: the rounds follow its score
                "public-context": str(out / "keys" / crypto.PUBLIC_CONTEXT_FILE),
                "checkpoint-dir": str(out / "checkpoints"),
            }
        )
        if config["dp-clip"]:  # the privacy accounting covers the model updates only
            config["denoise-rank"] = 0
        return config


def _natural(label: str) -> tuple[int, str]:
    return (len(label), label)


def prepare_nodes(s: SimulationSettings, out: Path, report: Report) -> list[NodeConfig]:
    """Write one node folder per site, give each the key, run the node data pipeline."""
    dirs = WRITERS[s.dataset](s.data, out / "nodes", s.until)  # fails early on a bad dataset
    fingerprint = site_keys(dirs, out / "keys")
    report(f"{len(dirs)} node folders written; keys made at {dirs[0].name}, fingerprint {fingerprint}")
    configs, totals = [], Counter()
    seed = int(s.run_config(out)["seed"])
    for d in dirs:
        if s.device != "cpu":  # as an operator would: in node.toml, which the ClientApp reads too
            with open(d / "node.toml", "a", encoding="utf-8") as toml:
                toml.write(f'\n[training]\ndevice = "{s.device}"\n')
        cfg = load_node_config(d)
        seed_simulated_secret(cfg.private_dir, seed, cfg.name)  # a repeatable simulation
        totals.update(Node(cfg).prepare())
        configs.append(cfg)
    series, periods = totals.pop("series"), totals.pop("periods")
    totals.pop("dropped_columns", None)
    report(
        f"{len(configs)} nodes prepared: {series} series, {periods} periods; quarantined rows by "
        f"reason (each node's private/quarantine.csv): {dict(totals.most_common())}"
    )
    return configs


def run_he(nodes: list[NodeConfig], rc: dict, report: Report) -> Outcome:
    from coordinator.planner.inprocess import run_inprocess
    from coordinator.server_app import app as server_app
    from warehouse_node.client_app import app as client_app

    rc = {**rc, "min-nodes": len(nodes)}
    messages = {"n": 0}
    # train, evaluate, publish (+ decide) per round; the profile's three steps; the network
    # forecast's query and its opening
    run = Settings.of(rc)
    per_round = 3 + (run.federation.validation != 0)
    steps = per_round * run.rounds + 3 * run.federation.denoise.enabled + 2 * run.network_forecast
    total = steps * len(nodes)

    def progress(line: str) -> None:
        messages["n"] += 1
        if messages["n"] % len(nodes) == 0:
            report(f"{messages['n']}/{total} node messages at most ({line})")

    dirs = [c.folder for c in nodes]
    started = time.monotonic()
    # one node trains at a time in-process: it uses this process's threads (by default every core)
    threads = torch.get_num_threads()
    grid = run_inprocess(server_app, client_app, dirs, rc, progress=progress, torch_threads=threads)
    seconds = time.monotonic() - started
    outcome = json.loads((Path(str(rc["checkpoint-dir"])) / PROGRESS_FILE).read_text()).get("outcome", {})
    return Outcome(
        int(outcome.get("round", 0)),
        int(outcome.get("best_round", 0)),
        str(outcome.get("reason", "")),
        seconds,
        grid.deployment_seconds(seconds),
    )


RUNNERS = {"he": run_he, "plain": run_plain, "local": run_local, "central": run_central}


def train(nodes: list[NodeConfig], s: SimulationSettings, out: Path, report: Report) -> Outcome:
    """Train in ``s.mode`` over prepared nodes (keys in ``out/keys``) until the stopping rule
    ends it; every node then holds the model it forecasts with."""
    started = time.monotonic()
    rc = s.run_config(out)
    denoise = Settings.of(rc).federation.denoise
    if denoise.enabled and len(nodes) < denoise.min_sites:
        report(f"cross-site denoising off: {len(nodes)} sites, fewer than denoise-min-sites")
        rc["denoise-rank"] = 0
    outcome = RUNNERS[s.mode](nodes, rc, report)
    report(
        f"{s.mode} training done in {time.monotonic() - started:.0f}s: {outcome.rounds} rounds, "
        f"best round {outcome.best_round} ({outcome.reason})"
    )
    return outcome


def train_and_forecast(
    nodes: list[NodeConfig], s: SimulationSettings, out: Path, report: Report
) -> tuple[pd.DataFrame, Outcome]:
    """``train``, then dataset-shaped forecasts from every node, and how the training ended."""
    outcome = train(nodes, s, out, report)
    # the federation's model at every site, whatever a site's own safeguards would do (a deployed
    # node falls back to a baseline when it cannot trust the model: warehouse_node/fallback.py)
    frames = [forecast(cfg, include_ended=True) for cfg in nodes]
    return to_dataset_columns(s.dataset, pd.concat(frames, ignore_index=True)), outcome


def simulate(out: Path, s: SimulationSettings, report: Report) -> pd.DataFrame:
    """Run one simulation into ``out``; write and return ``forecasts.parquet``."""
    out = Path(out).resolve()
    check_output(out, folder=True)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose another --out or remove it")
    nodes = prepare_nodes(s, out, report)
    result, outcome = train_and_forecast(nodes, s, out, report)
    result.to_parquet(out / "forecasts.parquet", index=False)
    write_json_atomic(out / OUTCOME_FILE, {"mode": s.mode, **outcome.as_dict()})
    if s.mode == "he":
        round_metrics(out / "checkpoints").to_csv(out / "rounds.csv", index=False)
    horizon = DATASETS[s.dataset].horizon
    report(f"{len(result)} forecast rows ({len(result) // horizon} series × {horizon} periods)")
    return result
