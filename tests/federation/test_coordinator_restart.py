"""The coordinator dies mid-run: `fedstock-planner resume` continues from the last intact checkpoint."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner
from flwr.common.constant import SUPERLINK_NODE_ID

from common import crypto
from common.codec import GLOBAL, STATE, read_encrypted
from common.config import load_node_config
from coordinator.aggregation import EncryptedFedAvg
from coordinator.checkpoints import latest_checkpoint
from coordinator.planner import inprocess
from coordinator.planner.cli import cli
from coordinator.planner.demo import DemoSettings, run_demo
from warehouse_node import journal

SETTINGS = DemoSettings(nodes=3, rounds=3, local_epochs=1, items=4, days=400, engine="inprocess")


def test_resume_continues_after_the_last_checkpoint_without_losing_or_repeating_a_round(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real_aggregate = EncryptedFedAvg.aggregate_train

    def dies_in_round_two(self, server_round, replies):
        if server_round + self.round_offset == 2:
            raise RuntimeError("coordinator killed")
        return real_aggregate(self, server_round, replies)

    with monkeypatch.context() as m:
        m.setattr(EncryptedFedAvg, "aggregate_train", dies_in_round_two)
        with pytest.raises(RuntimeError, match="coordinator killed"):
            run_demo(out, SETTINGS, lambda _line: None)
    ckpt = out / "checkpoints"
    assert latest_checkpoint(ckpt)[0] == 1 and not (ckpt / "round_0002.state.ckks").exists()
    round1 = (ckpt / "round_0001.state.ckks").read_bytes()

    sent: list = []
    real_wire = inprocess.wire

    def capture(msg):
        copy, blob = real_wire(msg)
        sent.append(copy)
        return copy, blob

    monkeypatch.setattr(inprocess, "wire", capture)
    result = CliRunner().invoke(cli, ["resume", str(out)])
    assert result.exit_code == 0, result.output
    assert "resuming run: 1 of 3 rounds done" in result.output
    history = json.loads((ckpt / "progress.json").read_text())["history"]
    assert [h["round"] for h in history if h["phase"] == "train"] == [1, 2, 3]
    assert (ckpt / "round_0001.state.ckks").read_bytes() == round1  # round 1 was not redone
    first_resumed = [
        m
        for m in sent
        if m.metadata.src_node_id == SUPERLINK_NODE_ID
        and m.metadata.message_type == "train"
        and m.metadata.group_id == "2"
    ]
    assert len(first_resumed) == 3
    assert all(read_encrypted(m.content[GLOBAL], STATE).to_bytes() == round1 for m in first_resumed)
    assert (out / "decisions.csv").is_file() and len((out / "rounds.csv").read_text().splitlines()) == 4
    assert (out / "report.html").is_file()  # the planner's report, and each site's morning report
    assert all((d / "out" / "report.html").is_file() for d in (out / "nodes").iterdir())
    assert (ckpt / "network.json").is_file() and (ckpt / "dc" / "decisions.csv").is_file()
    node_journal = journal.read_status(load_node_config(out / "nodes" / "warehouse-00"))
    assert node_journal["last_forecast"]["series"] == SETTINGS.items  # `fedstock-node status` sees it
    # the key pair was made at a node; the planner's and coordinator's keys/ hold the public half
    public_half = [crypto.MANIFEST_FILE, crypto.PUBLIC_CONTEXT_FILE]
    assert sorted(p.name for p in (out / "keys").iterdir()) == public_half
    assert all((d / "keys" / crypto.SECRET_CONTEXT_FILE).is_file() for d in (out / "nodes").iterdir())
    assert not [p for p in out.rglob(crypto.SECRET_CONTEXT_FILE) if "nodes" not in p.relative_to(out).parts]


def test_torn_checkpoint_is_detected_and_the_previous_round_is_used(tmp_path, secret_key, caplog):
    for r in (1, 2):
        vec = crypto.encrypt(secret_key, np.full(10, float(r)))
        (tmp_path / f"round_{r:04d}.state.ckks").write_bytes(vec.to_bytes())
    assert latest_checkpoint(tmp_path) == (2, tmp_path / "round_0002.state.ckks")
    torn = tmp_path / "round_0002.state.ckks"
    torn.write_bytes(torn.read_bytes()[:-1000])
    with caplog.at_level(logging.WARNING, logger="flwr"):
        found = latest_checkpoint(tmp_path)
    assert found == (1, tmp_path / "round_0001.state.ckks")
    assert "round_0002.state.ckks is torn" in caplog.text


def test_resume_refuses_a_folder_that_is_not_a_demo_run(tmp_path):
    result = CliRunner().invoke(cli, ["resume", str(tmp_path)])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path.resolve()} holds no demo.json: not a demo run folder"
    )


def test_a_round_summed_but_not_opened_before_the_coordinator_died_is_opened_on_resume(
    nodes, keys, tmp_path, monkeypatch
):
    from coordinator import publish, rounds
    from coordinator.planner.inprocess import run_inprocess
    from coordinator.planner.runs import round_metrics
    from coordinator.server_app import app as server_app
    from tests.conftest import run_config
    from warehouse_node import client_app as client_module

    ckpt = tmp_path / "ckpt"
    real = publish.publish_round_metrics

    def dies_opening_round_two(strategy, grid, server_round, config, timeout):
        if server_round == 1:  # not opened (say the sites did not agree): opened on resume too
            return None
        if server_round == 2:  # the sites open the sum, the coordinator dies before recording it
            vec = crypto.EncryptedVector.from_bytes((ckpt / "round_0002.eval_metrics.ckks").read_bytes())
            assert publish.open_by_sites(strategy, grid, "round-metrics", vec, config, timeout, 6, 2)[0]
            raise RuntimeError("coordinator killed")
        return real(strategy, grid, server_round, config, timeout)

    with monkeypatch.context() as m:
        m.setattr(rounds, "publish_round_metrics", dies_opening_round_two)
        with pytest.raises(RuntimeError, match="coordinator killed"):
            run_inprocess(server_app, client_module.app, nodes[0], run_config(keys, ckpt, rounds=3))
    assert latest_checkpoint(ckpt)[0] == 2 and len(round_metrics(ckpt)) == 0
    run_inprocess(
        server_app, client_module.app, nodes[0], {**run_config(keys, ckpt, rounds=3), "resume": True}
    )
    assert list(round_metrics(ckpt)["round"]) == [1, 2, 3]  # round 2's same sum, opened again
