"""Coordinator ServerApp: runs EncryptedFedAvg with the public context only.

Run config (pyproject ``[tool.flwr.app.config]``, overridable with ``flwr run --run-config``):
``public-context`` (path to public.ctx), ``checkpoint-dir``, ``num-rounds``, ``min-nodes``,
``round-timeout``, ``resume`` and the federation-wide model settings forwarded to every node.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from common import crypto
from common.privacy import privacy_from_config, privacy_report
from common.records import NODE_SETTINGS, check_node_settings
from coordinator.strategy import EncryptedFedAvg, latest_checkpoint, load_state

app = ServerApp()


def node_config_record(run_config: dict) -> ConfigRecord:
    return ConfigRecord({k: run_config[k] for k in NODE_SETTINGS if k in run_config})


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    if not rc.get("public-context"):
        raise ValueError("run config 'public-context' is not set: pass the coordinator's public.ctx")
    check_node_settings(rc)  # a wrong type stops here, by name, before any node works
    key = crypto.load_context(str(rc["public-context"]))
    checkpoint_dir = Path(str(rc.get("checkpoint-dir") or "checkpoints")).resolve()
    privacy = privacy_from_config(dict(rc))
    min_nodes = int(rc.get("min-nodes", 2))
    train_config = node_config_record(rc)
    if privacy is not None:  # fewer replies than dp-nodes would sum less noise than promised
        min_nodes = max(min_nodes, privacy.nodes)
        train_config["dp-nodes"] = privacy.nodes
    strategy = EncryptedFedAvg(key, checkpoint_dir, min_nodes=min_nodes)
    initial, done = ArrayRecord(), 0
    if rc.get("resume") and (found := latest_checkpoint(checkpoint_dir)):
        done, path = found
        initial = load_state(key, path)
        log(INFO, "resuming after round %d from %s", done, path)
    rounds = int(rc.get("num-rounds", 3)) - done
    if rounds <= 0:
        log(INFO, "all %d rounds already done", done)
        return
    strategy.resume_after(done)
    if privacy is not None:
        strategy.privacy = privacy_report(privacy, int(rc.get("num-rounds", 3)))
        log(INFO, "differential privacy: %s", strategy.privacy)
    strategy.start(
        grid,
        initial_arrays=initial,
        num_rounds=rounds,
        timeout=float(rc.get("round-timeout", 900.0)),
        train_config=train_config,
        evaluate_config=train_config,
    )
