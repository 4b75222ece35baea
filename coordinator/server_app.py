"""Coordinator ServerApp: runs EncryptedFedAvg with the public context only.

Run config (pyproject ``[tool.flwr.app.config]``, overridable with ``flwr run --run-config``):
``public-context`` (path to public.ctx), ``checkpoint-dir`` (or ``runs-dir``: then the run's
folder is RUNS_DIR/RUN_ID), ``num-rounds``, ``min-nodes``, ``round-timeout``, ``resume``,
``network-forecast`` and ``network-min-sites`` (the encrypted network totals after the last round,
opened by the sites: coordinator/publish.py),
``denoise-*`` (the cross-site profile before round 1, common/denoise.py) and the federation-wide
model settings forwarded to every node.
"""

from __future__ import annotations

import secrets
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from common import crypto
from common.network import MIN_SITES, Layout
from common.privacy import privacy_from_config, privacy_report
from common.records import (
    NODE_SETTINGS,
    check_node_settings,
    denoise_settings,
    node_setting,
    server_optimizer,
    stop_rule,
)
from coordinator.publish import publish_network
from coordinator.rounds import run_rounds
from coordinator.strategy import EncryptedFedAvg, latest_checkpoint, load_state

app = ServerApp()


def node_config_record(run_config: dict) -> ConfigRecord:
    return ConfigRecord({k: run_config[k] for k in NODE_SETTINGS if k in run_config})


def run_folder(rc: dict, run_id: int) -> Path:
    """checkpoint-dir if set; else RUNS_DIR/RUN_ID, where `fedstock-planner status RUN_ID` looks."""
    if rc.get("checkpoint-dir"):
        return Path(str(rc["checkpoint-dir"])).resolve()
    return (Path(str(rc.get("runs-dir") or "runs")) / str(run_id)).resolve()


def network_settings(rc: dict) -> tuple[Layout, int]:
    """The network forecast's cells and minimum of sites; a bad setting stops the run before round 1."""
    min_sites = int(rc.get("network-min-sites", MIN_SITES))
    if min_sites < MIN_SITES:
        raise ValueError(f"run config 'network-min-sites' must be at least {MIN_SITES}, got {min_sites}")
    horizon = node_setting(rc, "horizon", 14)  # the nodes' forecast periods
    layout = Layout.of(str(rc.get("network-group", "")), str(rc.get("network-groups", "")), horizon)
    return layout, min_sites


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    if not rc.get("public-context"):
        raise ValueError("run config 'public-context' is not set: pass the coordinator's public.ctx")
    check_node_settings(rc)  # a wrong type stops here, by name, before any node works
    optimizer, rule = server_optimizer(rc), stop_rule(rc)  # and so does a server step or rule out of range
    held_out = int(rc.get("validation-periods", -1)) != 0
    if rule.patience and not held_out:
        raise ValueError("run config 'stop-patience' needs a held-out window: 'validation-periods' is 0")
    key = crypto.load_context(str(rc["public-context"]))
    checkpoint_dir = run_folder(dict(rc), context.run_id)
    network = network_settings(dict(rc)) if rc.get("network-forecast") else None
    privacy = privacy_from_config(dict(rc))
    denoise = denoise_settings(rc)  # a bad setting stops the run here, by name
    if denoise.enabled and privacy is not None:
        raise ValueError("denoise-rank with dp-clip: the privacy accounting covers model updates only")
    min_nodes = int(rc.get("min-nodes", 2))
    train_config = node_config_record(rc)
    if privacy is not None:  # fewer replies than dp-nodes would sum less noise than promised
        min_nodes = max(min_nodes, privacy.nodes)
        train_config["dp-nodes"] = privacy.nodes
    strategy = EncryptedFedAvg(key, checkpoint_dir, min_nodes=min_nodes)
    strategy.stateful, strategy.run_token = optimizer.stateful, secrets.token_hex(8)
    initial, done = ArrayRecord(), 0
    if rc.get("resume") and (found := latest_checkpoint(checkpoint_dir)):
        done, path = found
        initial = load_state(key, path)
        log(INFO, "resuming after round %d from %s", done, path)
    rounds = int(rc.get("num-rounds", 3)) - done
    strategy.planned_rounds = int(rc.get("num-rounds", 3))
    strategy.resume_after(done)
    if privacy is not None:
        strategy.privacy = privacy_report(privacy, int(rc.get("num-rounds", 3)))
        log(INFO, "differential privacy: %s", strategy.privacy)
    timeout = float(rc.get("round-timeout", 900.0))
    if denoise.enabled and rounds > 0:  # the nodes' inputs for every round: before round 1
        train_config["denoise-id"] = strategy.profile_round(grid, train_config, denoise, timeout)["id"]
    if rounds <= 0:
        log(INFO, "all %d rounds already done", done)
    strategy.summary()
    final, best = run_rounds(strategy, grid, initial, rule, train_config, timeout, decide=held_out)
    if network is not None and len(final):  # also when a resumed run only lacks its network forecast
        layout, min_sites = network
        meta = strategy.network_round(grid, final, train_config, layout, min_sites, timeout, best)
        publish_network(strategy, grid, meta, train_config, timeout)
