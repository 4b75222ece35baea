"""The real ServerApp and ClientApp, in one process (3 nodes, 2 rounds)."""

import json
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from common import crypto
from common.codec import (
    CONFIG,
    METRICS,
    STATE,
    STATE_TAIL,
    UPDATE,
    encode_update,
    encrypted_record,
    eval_sums,
    read_encrypted,
)
from common.config import load_node_config
from coordinator.aggregation import RoundFailed
from coordinator.planner.inprocess import run_inprocess
from coordinator.planner.runs import round_metrics
from coordinator.server_app import app as server_app
from tests.conftest import FAST_RUN, node_round, run_config
from warehouse_node import client_app as client_module
from warehouse_node import federated
from warehouse_node.model_store import MODEL_FILE
from warehouse_node.node import Node
from warehouse_node.published import metric_ratios


def test_three_nodes_two_rounds_aggregate_is_the_weighted_average(nodes, keys, secret_key, tmp_path):
    dirs, _ = nodes
    replies: list[Message] = []
    rc = run_config(keys, tmp_path / "ckpt")
    run_inprocess(server_app, client_module.app, dirs, rc, observer=lambda m, _b: replies.append(m))
    train = [m for m in replies if m.metadata.message_type == "train"]
    assert len(train) == 6 and all(not m.has_error() for m in replies)
    # round 2: the checkpoint is the sum of the three encrypted [n·w, n·loss, n] replies
    round2 = [read_encrypted(m.content[UPDATE], STATE) for m in train if m.metadata.group_id == "2"]
    per_node = [crypto.decrypt(secret_key, v) for v in round2]
    expected = sum(v[:-1] for v in per_node) / sum(v[-1] for v in per_node)
    state = crypto.decrypt(
        secret_key,
        crypto.EncryptedVector.from_bytes((tmp_path / "ckpt" / "round_0002.state.ckks").read_bytes()),
    )
    assert np.allclose(state[:-1] / state[-1], expected, rtol=1e-6, atol=1e-7)
    # every node kept the decrypted global model privately
    assert all((d / "private" / MODEL_FILE).is_file() for d in dirs)
    metrics = round_metrics(tmp_path / "ckpt")  # as the sites opened them: no key needed
    assert list(metrics["round"]) == [1, 2] and (metrics["nodes"] == 3).all()
    assert metrics["holdout_mae"].gt(0).all() and metrics["coverage_80"].between(0, 1).all()
    assert metrics["train_pinball"].gt(0).all()


def test_each_site_keeps_its_own_holdout_scores_and_they_add_up_to_the_planners(
    nodes, keys, secret_key, tmp_path
):
    from click.testing import CliRunner

    from warehouse_node import journal
    from warehouse_node.cli import cli as node_cli

    dirs, _ = nodes
    scores_sums = {
        "abs_err_model": 2.0,
        "abs_err_naive": 4.0,
        "pinball_scaled": 1.0,
        "covered_80": 1.0,
        "points": 2.0,
    }
    run_inprocess(server_app, client_module.app, dirs, run_config(keys, tmp_path / "ckpt"))
    metrics = round_metrics(tmp_path / "ckpt").set_index("round")
    scores = [journal.read_holdout(load_node_config(d))["rounds"] for d in dirs]
    assert all([e["round"] for e in site] == [1, 2] for site in scores)
    for rnd in (1, 2):
        entries = [site[rnd - 1] for site in scores]
        points = sum(e["points"] for e in entries)
        pairs = (("mae", "holdout_mae"), ("naive_mae", "naive_mae"), ("coverage_80", "coverage_80"))
        for mine, planners in pairs:  # the planner's figures carry CKKS rounding, ~1e-4 here
            pooled = sum(e[mine] * e["points"] for e in entries) / points
            assert pooled == pytest.approx(metrics.loc[rnd, planners], rel=1e-3)
        assert len({e["model"] for e in entries}) == 1  # one global model, scored at each site
    assert not (dirs[0] / "out" / journal.HOLDOUT_FILE).exists()  # errors stay in private/
    shown = CliRunner().invoke(node_cli, ["status", "--node", str(dirs[0])])
    assert shown.exit_code == 0 and "seasonal naive" in shown.output, shown.output
    as_json = CliRunner().invoke(node_cli, ["status", "--node", str(dirs[0]), "--json"])
    assert json.loads(as_json.output)["holdout"] == scores[0][-1]
    damaged = load_node_config(dirs[0]).private_dir / journal.HOLDOUT_FILE
    damaged.write_text("{not json")
    shown = CliRunner().invoke(node_cli, ["status", "--node", str(dirs[0])])
    assert shown.exit_code == 0 and "holdout.json is damaged" in shown.output, shown.output
    journal.record_holdout(load_node_config(dirs[0]), 1, 3, "m", dict(scores_sums))  # the round goes on
    assert [e["round"] for e in journal.read_holdout(load_node_config(dirs[0]))["rounds"]] == [3]
    assert damaged.with_suffix(".damaged").read_text() == "{not json"
    journal.record_holdout(load_node_config(dirs[0]), 1, 4, "m", {**scores_sums, "points": 0.0})
    shown = CliRunner().invoke(node_cli, ["status", "--node", str(dirs[0])])
    assert "no hold-out window here" in shown.output, shown.output


# the only stop reasons (common/stopping.py): rounds and the rule's own settings, no score
REASON = re.compile(
    r"^(round cap: \d+ rounds, best round \d+|round \d+ of at most \d+, best round \d+|no improvement: \d+ "
    r"rounds without a validation (mae|pinball) at least [\d.]+% below round \d+'s)$"
)
# what a reply may say in plaintext: digests, the stopping decision and rounds, never a figure;
# only a publish reply carries figures: a sum over every site, which the sites opened
PLAINTEXT_REPLY = {
    "fingerprint",
    "start-model",
    "model",
    "applied-round",
    "decision",
    "best-round",
    "stop-reason",
}


@pytest.mark.parametrize("optimizer", ["fedavg", "fedadam"])
def test_replies_carry_no_plaintext_figure_but_the_sums_the_sites_opened(
    nodes, keys, secret_key, tmp_path, optimizer
):
    replies: list[Message] = []
    rc = {**run_config(keys, tmp_path / "c", rounds=2), "server-optimizer": optimizer, "stop-patience": 1}
    run_inprocess(server_app, client_module.app, nodes[0], rc, observer=lambda m, _b: replies.append(m))
    kinds, opened = set(), []
    for m in replies:
        config = m.content.config_records[CONFIG]
        kinds.add(m.metadata.message_type)
        assert len(m.content.metric_records) == 0
        if m.metadata.message_type == "query.publish":
            assert set(config.keys()) == {"fingerprint", "publish-kind", "values"}
            opened.append((m.metadata.group_id, config["publish-kind"], tuple(config["values"])))
            continue
        assert set(config.keys()) <= PLAINTEXT_REPLY and "fingerprint" in config
        assert not any(isinstance(v, float) for v in config.values())
        assert REASON.match(str(config.get("stop-reason", "round cap: 2 rounds, best round 1")))
        if m.content.array_records:
            assert all(a.stype == "fedstock.ckks" for a in m.content.array_records[UPDATE].values())
    assert kinds == {"train", "evaluate", "query.decide", "query.publish"}
    assert len(opened) == 6 and len(set(opened)) == 2  # each round: three sites, one same sum
    for group, kind, values in set(opened):  # ratios of the sum of the three sites' evaluation replies
        sent = [
            crypto.decrypt(secret_key, read_encrypted(m.content[UPDATE], METRICS))
            for m in replies
            if m.metadata.message_type == "evaluate" and m.metadata.group_id == group
        ]
        assert kind == "round-metrics" and values[-1] == 3
        expected = metric_ratios(eval_sums(np.sum(sent, axis=0)))
        np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-3)


def _damaged(kind: str, state: crypto.EncryptedVector, key: crypto.KeyContext, rogue: crypto.KeyContext):
    """One node's state vector, damaged in one of the ways a coordinator must survive."""
    if kind == "foreign key":
        return crypto.encrypt(rogue, np.ones(state.length))
    if kind == "wrong length":
        return crypto.encrypt(key, np.ones(state.length + 1))
    if kind == "other scale":
        return crypto.encrypt(key, np.ones(state.length), scale_bits=key.scale_bits - 5)
    if kind == "corrupt bytes":
        chunk = bytes(state.chunks[0])
        return replace(state, chunks=(chunk[:100] + bytes(len(chunk) - 100), *state.chunks[1:]))
    if kind == "truncated":
        return replace(state, chunks=(state.chunks[0][: len(state.chunks[0]) // 2], *state.chunks[1:]))
    if kind == "oversized":
        return replace(state, chunks=(bytes(state.chunks[0]) * 2, *state.chunks[1:]))
    raise AssertionError(kind)


REFUSAL = {
    "foreign key": "encrypted under key",
    "wrong length": "values, expected",
    "other scale": "scale",
    "corrupt bytes": "corrupt ciphertext",
    "truncated": "corrupt ciphertext",
    "oversized": "oversized ciphertext",
}


@pytest.mark.parametrize("kind", list(REFUSAL))
def test_bad_update_is_refused_and_the_aggregate_is_the_survivors_average(
    kind, nodes, keys, secret_key, tmp_path, monkeypatch
):
    crypto.keygen(tmp_path / "rogue")
    rogue = crypto.load_context(tmp_path / "rogue" / crypto.SECRET_CONTEXT_FILE)
    original = client_module.train
    rogue_node = nodes[0][2].resolve()

    def train(msg, context):
        reply = original(msg, context)
        if str(context.node_config["node-dir"]) != str(rogue_node):
            return reply
        state = read_encrypted(reply.content[UPDATE], STATE)
        bad = _damaged(kind, state, secret_key, rogue)
        content = RecordDict(
            {
                UPDATE: encrypted_record(**{STATE: bad}),
                CONFIG: ConfigRecord({"fingerprint": bad.fingerprint}),
            }
        )
        return Message(content, reply_to=msg)

    monkeypatch.setitem(client_module.app._registered_funcs, "train.default", train)
    replies: list[Message] = []
    rc = run_config(keys, tmp_path / "ckpt", rounds=1, min_nodes=2)
    run_inprocess(server_app, client_module.app, nodes[0], rc, observer=lambda m, _b: replies.append(m))
    history = json.loads((tmp_path / "ckpt" / "progress.json").read_text())["history"]
    train_round = next(h for h in history if h["phase"] == "train")
    assert train_round["replies"] == 2 and len(train_round["refused"]) == 1
    assert REFUSAL[kind] in train_round["refused"][0]
    survivors = [
        crypto.decrypt(secret_key, read_encrypted(m.content[UPDATE], STATE))
        for m in replies
        if m.metadata.message_type == "train" and m.metadata.src_node_id != 1002
    ]
    assert len(survivors) == 2
    summed = crypto.decrypt(
        secret_key,
        crypto.EncryptedVector.from_bytes((tmp_path / "ckpt" / "round_0001.state.ckks").read_bytes()),
    )
    expected = sum(v[:-1] for v in survivors) / sum(v[-1] for v in survivors)
    assert np.allclose(summed[:-1] / summed[-1], expected, rtol=1e-6, atol=1e-7)


def test_node_with_nan_weights_sends_nothing_and_says_why(nodes, keys, tmp_path, monkeypatch):
    real_update, calls = federated.local_update, []

    def update(*args):
        new, n, loss = real_update(*args)
        calls.append(1)
        if len(calls) == 3:  # the third node's training diverged
            new = np.where(np.arange(len(new)) == 5, np.nan, new)
        return new, n, loss

    monkeypatch.setattr(federated, "local_update", update)
    replies: list[Message] = []
    rc = run_config(keys, tmp_path / "c", rounds=1)
    with pytest.raises(RoundFailed, match="minimum is 3"):
        run_inprocess(server_app, client_module.app, nodes[0], rc, observer=lambda m, _b: replies.append(m))
    errors = [m for m in replies if m.has_error()]
    assert len(errors) == 1 and "NaN or infinite weights: update not sent" in errors[0].error.reason
    assert all(UPDATE in m.content for m in replies if not m.has_error())


def test_node_refuses_a_coordinator_announcing_another_key(nodes, keys, tmp_path):
    crypto.keygen(tmp_path / "other")
    rc = run_config(keys, tmp_path / "ckpt", rounds=1)
    rc["public-context"] = str(tmp_path / "other" / crypto.PUBLIC_CONTEXT_FILE)
    replies: list[Message] = []
    with pytest.raises(RoundFailed):
        run_inprocess(server_app, client_module.app, nodes[0], rc, observer=lambda m, _b: replies.append(m))
    assert replies and all(m.has_error() and "KeyMismatchError" in m.error.reason for m in replies)


def test_coordinator_refuses_to_start_with_a_secret_key(nodes, keys, tmp_path):
    rc = run_config(keys, tmp_path / "ckpt", rounds=1)
    rc["public-context"] = str(keys / crypto.SECRET_CONTEXT_FILE)
    with pytest.raises(crypto.CryptoError, match="must not hold a secret key"):
        run_inprocess(server_app, client_module.app, nodes[0], rc)


def test_node_refuses_an_update_whose_sum_over_the_round_could_wrap(nodes, secret_key):
    """The coordinator announces how many replies it will add; a node whose values, summed over that
    many, could pass the CKKS bound sends nothing rather than a sum that decrypts to garbage."""
    node = Node(load_node_config(nodes[0][0]))
    fine = node_round({**FAST_RUN, "server-round": 1, "round-nodes": 3})
    u = node.train(fine, None)
    assert fine.nodes == 3 and encode_update(secret_key, u.weights, u.weight, u.loss, fine.nodes).length > 0
    huge = node_round({**FAST_RUN, "server-round": 1, "round-nodes": 10**7})
    with pytest.raises(crypto.CryptoError, match="too large: a sum of 10000000"):
        encode_update(secret_key, u.weights, u.weight, u.loss, huge.nodes)


def _round_one_global(keys, secret_key, nodes, folder, **settings) -> np.ndarray:
    rc = {**run_config(keys, folder, rounds=1), **settings}
    run_inprocess(server_app, client_module.app, nodes, rc)
    blob = (folder / "round_0001.state.ckks").read_bytes()
    state = crypto.decrypt(secret_key, crypto.EncryptedVector.from_bytes(blob))
    return state[: -len(STATE_TAIL)] / state[-1]


def test_a_server_learning_rate_moves_the_global_model_that_many_mean_updates(
    nodes, keys, secret_key, tmp_path
):
    """The coordinator cannot read the model, so the nodes take the server step: with η = 3 the
    aggregate is start + 3 × (FedAvg's aggregate − start), through the real apps and CKKS."""
    fedavg = _round_one_global(keys, secret_key, nodes[0], tmp_path / "a")
    stepped = _round_one_global(keys, secret_key, nodes[0], tmp_path / "b", **{"server-learning-rate": 3.0})
    s = node_round({**FAST_RUN, "server-round": 1})
    start = federated.round_start(s, None)
    assert not np.allclose(fedavg, start)
    assert np.allclose(stepped, start + 3.0 * (fedavg - start), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rate", [0.0, -1.0, 11.0])
def test_coordinator_refuses_a_server_learning_rate_out_of_range_before_round_one(
    rate, nodes, keys, tmp_path
):
    rc = {**run_config(keys, tmp_path / "ckpt", rounds=1), "server-learning-rate": rate}
    with pytest.raises(ValueError, match=r"'server-learning-rate' must be in \(0, 10\]"):
        run_inprocess(server_app, client_module.app, nodes[0], rc)
    assert not (tmp_path / "ckpt" / "round_0001.state.ckks").exists()


def test_coordinator_refuses_a_negative_proximal_term_before_round_one(nodes, keys, tmp_path):
    rc = {**run_config(keys, tmp_path / "ckpt", rounds=1), "proximal-mu": -0.1}
    with pytest.raises(ValueError, match=r"'proximal-mu' must be 0 or more, got -0.1"):
        run_inprocess(server_app, client_module.app, nodes[0], rc)
    assert not (tmp_path / "ckpt" / "round_0001.state.ckks").exists()


def test_a_node_continues_its_own_optimizer_state_only_from_its_previous_round_of_the_same_run(nodes):
    cfg = load_node_config(nodes[0][0])
    settings = {**FAST_RUN, "num-rounds": 3}
    first = node_round({**settings, "server-round": 1})
    session = Node(cfg)
    _, after_one, _, _ = federated.round_update(cfg, session.data(first), first, None)
    saved = torch.load(cfg.private_dir / federated.OPTIMIZER_FILE, weights_only=True)
    assert saved["round"] == 1 and saved["state"]["state"]  # AdamW moments per weight tensor

    def held(**changes) -> dict:
        return federated.load_optimizer_state(cfg, node_round({**settings, **changes}))

    assert held(**{"server-round": 2})
    assert not held(**{"server-round": 1})  # a run's first round starts fresh
    assert not held(**{"server-round": 3})  # a round missed: the moments are stale
    assert not held(**{"server-round": 2, "seed": 4})  # another run's moments
    assert not held(**{"server-round": 2, "learning-rate": 0.01})
    # round 2 continues the state: not what a fresh optimizer would send
    second = node_round({**settings, "server-round": 2})
    _, continued, _, _ = federated.round_update(cfg, session.data(second), second, after_one)
    (cfg.private_dir / federated.OPTIMIZER_FILE).unlink()
    _, fresh, _, _ = federated.round_update(cfg, session.data(second), second, after_one)
    assert not np.allclose(continued, fresh)
    (cfg.private_dir / federated.OPTIMIZER_FILE).write_bytes(b"not a torch file")
    assert not held(**{"server-round": 3})  # unreadable: a fresh optimizer, not a failed round
    _, _, windows, _ = federated.round_update(cfg, session.data(second), second, after_one)  # rewrites it
    assert windows > 0 and held(**{"server-round": 3})


@pytest.mark.parametrize(
    ("app", "not_loaded"),
    [
        ("coordinator.server_app", {"torch", "scipy"}),
        ("warehouse_node.client_app", {"scipy", "dp_accounting"}),
    ],
)
def test_each_app_process_starts_without_the_libraries_it_does_not_need(app, not_loaded):
    """Flower starts a process per run (ServerApp) and per message (ClientApp): each pays its imports."""
    code = f"import sys, {app}; print(' '.join(sorted(set({sorted(not_loaded)!r}) & set(sys.modules))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"{app} loads {loaded.stdout.strip()}"
