"""The run's rounds: train, evaluate, and the nodes' decision whether the model is done.

After each round's evaluation the coordinator sends every node the summed hold-out scores of all
rounds so far (ciphertexts it cannot read; ``SCORES-NNNN``). Each node decrypts them, applies the
run's stopping rule (common/stopping.py) and replies with its decision only: continue, or stop
and keep round k's model. The coordinator follows the decision most valid replies agree on, and
records that decision and its reason, never one site's score (the round's sum over the sites is
opened separately, for the planner: coordinator/publish.py). The network forecast then uses round k.
"""

from __future__ import annotations

import time
from collections import Counter
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, MessageType
from flwr.common.logger import log
from flwr.serverapp import Grid

from common import crypto
from common.codec import CONFIG, SCORES, encrypted_record
from common.stopping import CONTINUE, STOP, StopRule
from coordinator.aggregation import EncryptedFedAvg
from coordinator.checkpoints import checkpoint_file, load_state
from coordinator.publish import publish_missing, publish_round_metrics

DECIDE = f"{MessageType.QUERY}.decide"


def summed_scores(checkpoint_dir: Path, last: int) -> ArrayRecord:
    """The encrypted hold-out sums of rounds 1..last that exist (a round whose evaluation failed
    has none: the nodes count it as no improvement)."""
    vectors = {}
    for r in range(1, last + 1):
        path = checkpoint_file(checkpoint_dir, r, "eval_metrics")
        if path.is_file():
            vectors[f"{SCORES}-{r:04d}"] = crypto.EncryptedVector.from_bytes(path.read_bytes())
    return encrypted_record(**vectors)


def ask_decision(
    strategy: EncryptedFedAvg, grid: Grid, server_round: int, config: ConfigRecord, timeout: float
) -> dict | None:
    """Every node's decision after ``server_round``; the one most valid replies agree on, or None
    when fewer than the minimum of nodes agree (the run then goes on: a missing decision never
    stops it early)."""
    scores = summed_scores(strategy.run.folder, server_round)
    if not len(scores):
        return None
    messages = strategy.messages(scores, config, grid, DECIDE, server_round - strategy.round_offset)
    votes, refused = Counter(), []
    for msg in grid.send_and_receive(messages, timeout=timeout):
        node = msg.metadata.src_node_id
        if msg.has_error():
            refused.append(f"node {node}: error reply: {msg.error.reason}")
            continue
        reply = dict(msg.content[CONFIG]) if CONFIG in msg.content.config_records else {}
        if reply.get("fingerprint") != strategy.key.fingerprint or reply.get("decision") not in (
            CONTINUE,
            STOP,
        ):
            refused.append(f"node {node}: refused: no decision under this run's key")
            continue
        votes[(reply["decision"], int(reply["best-round"]), str(reply.get("stop-reason", "")))] += 1
    for line in refused:
        log(WARNING, "round %d decision: %s", server_round, line)
    if not votes:
        return None
    (action, best, reason), count = votes.most_common(1)[0]
    if count < strategy.min_nodes:
        log(
            WARNING,
            "round %d decision: %d nodes agree, the minimum is %d",
            server_round,
            count,
            strategy.min_nodes,
        )
        return None
    if len(votes) > 1:
        log(
            WARNING,
            "round %d decision: the nodes disagree (%s); following %d of them",
            server_round,
            dict(votes),
            count,
        )
    decision = {
        "round": server_round,
        "decision": action,
        "best_round": best,
        "reason": reason,
        "nodes": count,
    }
    strategy.run.history.append(
        {**decision, "phase": "decide", "refused": refused, "time": time.time(), "replies": count}
    )
    return decision


def run_rounds(
    strategy: EncryptedFedAvg,
    grid: Grid,
    initial: ArrayRecord,
    rule: StopRule,
    config: ConfigRecord,
    timeout: float,
    decide: bool,
) -> tuple[ArrayRecord, int]:
    """Rounds after ``strategy.round_offset`` up to the cap, stopping when the nodes decide to.
    Returns the global state the nodes keep (the best round's when they decide) and its round."""
    arrays, done = initial, strategy.round_offset
    publish_missing(strategy, grid, config, timeout)  # a resumed run's rounds summed but not opened
    if strategy.run.outcome:  # a resumed run that had already stopped
        best = int(strategy.run.outcome["best_round"])
        return load_state(strategy.key, _state_path(strategy, best)), best
    for server_round in range(done + 1, rule.max_rounds + 1):
        relative = server_round - strategy.round_offset
        log(INFO, "[ROUND %d/%d]", server_round, rule.max_rounds)
        replies = grid.send_and_receive(
            strategy.configure_train(relative, arrays, config, grid), timeout=timeout
        )
        arrays, _ = strategy.aggregate_train(relative, replies)
        replies = grid.send_and_receive(
            strategy.configure_evaluate(relative, arrays, config, grid), timeout=timeout
        )
        strategy.aggregate_evaluate(relative, replies)
        publish_round_metrics(strategy, grid, server_round, config, timeout)
        decision = ask_decision(strategy, grid, server_round, config, timeout) if decide else None
        if decision is not None and decision["decision"] == STOP:
            strategy.run.outcome = decision
            strategy.run.step(server_round, "stop", [], [])
            log(INFO, "stopping after round %d: %s", server_round, decision["reason"])
            best = decision["best_round"]
            return (
                arrays if best == server_round else load_state(strategy.key, _state_path(strategy, best))
            ), best
    last = rule.max_rounds
    strategy.run.outcome = {
        "round": last,
        "decision": STOP,
        "best_round": last,
        "reason": f"round cap: {last} rounds",
    }
    if decide:
        strategy.run.outcome["reason"] += " (no decision from the nodes: the last round's model)"
    strategy.run.step(last, "stop", [], [])
    return arrays, last


def _state_path(strategy: EncryptedFedAvg, server_round: int) -> Path:
    return checkpoint_file(strategy.run.folder, server_round, "state")
