"""Coordinator ServerApp: runs EncryptedFedAvg with the public context only.

Its settings are the run config (pyproject ``[tool.flwr.app.config]``, overridable with ``flwr run
--run-config``), read once into ``common.settings.Settings``: ``public-context`` (path to public.ctx),
``checkpoint-dir`` (or ``runs-dir``: then the run's folder is RUNS_DIR/RUN_ID), ``min-nodes``,
``round-timeout``, ``resume``, ``network-forecast`` (the encrypted network totals after the last
round, opened by the sites: coordinator/publish.py), and the federation's settings, which every
node receives with each message.
"""

from __future__ import annotations

import secrets
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from common import crypto
from common.privacy import privacy_report
from common.settings import Settings
from coordinator.aggregation import EncryptedFedAvg
from coordinator.checkpoints import RunRecord, latest_checkpoint, load_state
from coordinator.publish import publish_network
from coordinator.queries import network_round, profile_round
from coordinator.rounds import run_rounds

app = ServerApp()


def run_folder(s: Settings, run_id: int) -> Path:
    """checkpoint-dir if set; else RUNS_DIR/RUN_ID, where `fedstock-planner status RUN_ID` looks."""
    if s.checkpoint_dir:
        return Path(s.checkpoint_dir).resolve()
    return (Path(s.runs_dir or "runs") / str(run_id)).resolve()


@app.main()
def main(grid: Grid, context: Context) -> None:
    s = Settings.of(context.run_config)  # a wrong key, type or range stops here, by name
    if not s.public_context:
        raise ValueError("run config 'public-context' is not set: pass the coordinator's public.ctx")
    run = s.federation
    key = crypto.load_context(s.public_context)
    record = RunRecord(run_folder(s, context.run_id), key.fingerprint, secrets.token_hex(8))
    strategy = EncryptedFedAvg(key, record, s.min_nodes, stateful=run.server.stateful)
    initial, done = ArrayRecord(), 0
    if s.resume and (found := latest_checkpoint(record.folder)):
        done, path = found
        initial = load_state(key, path)
        log(INFO, "resuming after round %d from %s", done, path)
    record.planned_rounds, strategy.round_offset = s.rounds, done
    record.resume_after(done)
    if run.privacy is not None:
        record.privacy = privacy_report(run.privacy, s.rounds)
        log(INFO, "differential privacy: %s", record.privacy)
    config = ConfigRecord(run.record)
    if run.denoise.enabled and done < s.rounds:  # the nodes' inputs for every round: before round 1
        config["denoise-id"] = profile_round(strategy, grid, config, run.denoise, s.round_timeout)["id"]
    if done >= s.rounds:
        log(INFO, "all %d rounds already done", done)
    strategy.summary()
    held_out = run.validation != 0
    final, best = run_rounds(strategy, grid, initial, run.stop, config, s.round_timeout, decide=held_out)
    if s.network_forecast and len(final):  # also when a resumed run only lacks its network forecast
        meta = network_round(
            strategy, grid, final, config, run.network, run.network_min_sites, s.round_timeout, best
        )
        publish_network(strategy, grid, meta, config, s.round_timeout)
