"""The federation decides when its model is done, through the real apps in one process.

The nodes decrypt the summed hold-out scores, apply one rule and keep the best round's model; the
coordinator learns only the decision. With an adaptive server optimizer every node takes the same
server step and the sites stay on the same model, also after missing a round.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from common import crypto
from common.codec import EVAL_METRICS, METRICS, SCALE_BITS, decode_scores, encode_scores, global_weights
from common.config import load_node_config
from common.stopping import validation_score
from coordinator.checkpoints import PROGRESS_FILE
from coordinator.planner.inprocess import InProcessGrid, run_inprocess
from coordinator.planner.runs import run_status
from coordinator.server_app import app as server_app
from tests.conftest import run_config
from warehouse_node import client_app as client_module
from warehouse_node import journal
from warehouse_node.model_store import CANDIDATE_FILE, MODEL_FILE
from warehouse_node.server_state import STATE_DIR

# an improvement of 90% per round is never reached: the run stops after round 1 + patience
NEVER_BETTER = {"stop-patience": 1, "stop-min-improvement": 0.9}


def _progress(folder) -> dict:
    return json.loads((folder / PROGRESS_FILE).read_text())


def _leaves(record, key: str = "") -> tuple[list[float], list[str]]:
    """Every fractional number (timestamps aside) and every string in a JSON record."""
    if isinstance(record, dict):
        parts = [_leaves(v, k) for k, v in record.items()]
    elif isinstance(record, list):
        parts = [_leaves(v, key) for v in record]
    elif isinstance(record, str):
        return [], [record]
    elif isinstance(record, float) and key != "time" and not record.is_integer():
        return [record], []  # counts, rounds and node ids are whole numbers, no score
    else:
        return [], []
    return [n for p in parts for n in p[0]], [t for p in parts for t in p[1]]


def _saved_round(node_dir, name=MODEL_FILE) -> tuple[int, np.ndarray]:
    blob = torch.load(load_node_config(node_dir).private_dir / name, weights_only=True)
    return int(blob["round"]), blob["vector"].numpy()


def test_a_run_that_stops_early_keeps_the_best_rounds_model_everywhere(nodes, keys, secret_key, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc = {**run_config(keys, ckpt, rounds=5), **NEVER_BETTER, "network-forecast": True}
    run_inprocess(server_app, client_module.app, nodes[0], rc)
    outcome = _progress(ckpt)["outcome"]
    assert (outcome["round"], outcome["best_round"], outcome["decision"]) == (2, 1, "stop")
    assert outcome["reason"].startswith("no improvement: 1 rounds")
    assert not (ckpt / "round_0003.state.ckks").exists()  # no round after the decision
    best = global_weights(
        crypto.decrypt(
            secret_key, crypto.EncryptedVector.from_bytes((ckpt / "round_0001.state.ckks").read_bytes())
        )
    )
    for d in nodes[0]:
        kept_round, vector = _saved_round(d)
        assert kept_round == 1  # the forecasting model is round 1's, not the last round's
        np.testing.assert_allclose(vector, best.astype(np.float32), atol=1e-5)
    kept = {journal.read_status(load_node_config(d))["last_decision"]["kept_model"] for d in nodes[0]}
    assert kept == {journal.model_fingerprint(best)}  # `fedstock-node status`: one model at every site
    assert json.loads((ckpt / "network.json").read_text())["round"] == 1
    status = run_status(ckpt)
    assert status["best_round"] == 1 and status["stop_reason"].startswith("no improvement")


def test_the_coordinators_files_hold_the_decision_and_sums_but_no_sites_own_score(nodes, keys, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_inprocess(
        server_app, client_module.app, nodes[0], {**run_config(keys, ckpt, rounds=3), **NEVER_BETTER}
    )
    numbers, texts = _leaves(_progress(ckpt))
    holdout = journal.read_holdout(load_node_config(nodes[0][0]))["rounds"]
    for entry in holdout:  # this site's own scores appear nowhere, only the sums the sites opened
        for k in ("mae", "naive_mae", "coverage_80"):
            score = float(entry[k])
            if score.is_integer():  # 0 or 1 would match a round number, not a leak
                continue
            assert not any(math.isclose(score, n, rel_tol=1e-3) for n in numbers), (k, score)
            shown = f"{score:.3g}"
            written = re.compile(rf"(?<![\d.]){re.escape(shown)}(?!\d)")
            assert "." not in shown or not any(written.search(t) for t in texts), (k, score)
    decide = [h for h in _progress(ckpt)["history"] if h["phase"] == "decide"]
    assert {h["decision"] for h in decide} <= {"continue", "stop"} and all(h["nodes"] == 3 for h in decide)
    for h in decide:
        assert set(h) == {
            "round",
            "decision",
            "best_round",
            "reason",
            "nodes",
            "phase",
            "refused",
            "time",
            "replies",
        }


def test_a_candidate_model_is_kept_only_once_the_federation_ranks_it_best(nodes, keys, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_inprocess(
        server_app, client_module.app, nodes[0], {**run_config(keys, ckpt, rounds=2), **NEVER_BETTER}
    )
    # round 2 was evaluated (its candidate written) but never ranked best: round 1 stays
    assert _saved_round(nodes[0][0])[0] == 1
    assert _saved_round(nodes[0][0], CANDIDATE_FILE)[0] == 2


def test_early_stopping_needs_a_held_out_window(nodes, keys, tmp_path):
    rc = {**run_config(keys, tmp_path / "c", rounds=3), "stop-patience": 2, "validation-periods": 0}
    with pytest.raises(ValueError, match="'stop-patience' needs a held-out window"):
        run_inprocess(server_app, client_module.app, nodes[0], rc)


class MissesTwoRounds(InProcessGrid):
    """Node 1002 gets none of the messages of rounds 2 and 3 (train, evaluate, decide): they time
    out. In round 4 it needs the aggregate of round 2, which only the coordinator's checkpoint holds."""

    def push_messages(self, messages):
        messages = list(messages)
        lost = [m for m in messages if m.metadata.group_id in ("2", "3") and m.metadata.dst_node_id == 1002]
        return super().push_messages([m for m in messages if m not in lost])


@pytest.mark.parametrize("optimizer", ["fedavgm", "fedadam"])
def test_with_a_server_optimizer_every_site_holds_the_same_model_even_after_missing_a_round(
    nodes, keys, tmp_path, optimizer
):
    ckpt = tmp_path / "ckpt"
    rc = {
        **run_config(keys, ckpt, rounds=4, min_nodes=2),
        "server-optimizer": optimizer,
        "server-learning-rate": 0.05 if optimizer == "fedadam" else 1.0,
    }
    run_inprocess(server_app, client_module.app, nodes[0], rc, grid_class=MissesTwoRounds)
    trained = {h["round"]: h for h in _progress(ckpt)["history"] if h["phase"] == "train"}
    assert trained[3]["nodes"] == [1000, 1001] and trained[4]["nodes"] == [1000, 1001, 1002]
    assert not trained[4]["refused"]  # the returning site caught up: it trained from the same model
    models = []
    for d in nodes[0]:
        events = journal.read_status(load_node_config(d))["events"]
        models.append({e["round"]: e["start_model"] for e in events if e["kind"] == "train"})
    assert models[2][4] == models[0][4] == models[1][4] and 3 not in models[2]
    token = _progress(ckpt)["run_token"]
    replayed = load_node_config(nodes[0][2]).private_dir / STATE_DIR / token / "round_0002.npz"
    assert replayed.is_file()  # round 2's aggregate reached it from the coordinator's checkpoint


def test_evaluation_sums_carry_every_metric_the_rule_reads(secret_key, public_key):
    """What a site encrypts sums, at the coordinator, to what every site's stopping rule reads."""
    # sums of a few hundred points, as a site's are: at this scale CKKS noise is ~0.1 absolute (100 runs)
    a = {"abs_err_model": 600.0, "abs_err_naive": 900.0, "pinball_scaled": 200.0, "covered_80": 400.0}
    a["points"] = 500.0
    a |= {"weight_x_train_pinball": 0.3, "train_weight": 1.0}
    total = crypto.RunningSum(public_key, len(EVAL_METRICS), SCALE_BITS[METRICS])
    for sums in (a, {k: 2 * v for k, v in a.items()}):
        total.add(encode_scores(secret_key, sums, addends=2))
    summed = decode_scores(secret_key, total.result())
    assert round(summed["nodes"]) == 2 and summed["points"] == pytest.approx(1500, abs=0.5)
    assert validation_score(summed, "mae") == pytest.approx(1800 / 1500, rel=5e-4)
    assert validation_score(summed, "pinball") == pytest.approx(600 / 1500, rel=5e-4)
