"""The simulation's reference modes, each trained until its own validation score stops improving.

* ``plain``: the federation's rounds and node code, averaged in plaintext (the server step too);
* ``local``: each store alone, its own rounds of the same size, judged on its own hold-out window;
* ``central``: all stores' windows pooled, one round = every store's batches of a federated round.

Every mode applies the federation's stopping rule (common/stopping.py) to hold-out sums made by
the same function the nodes use (``warehouse_node.pipeline.holdout_metrics``), under the same cap,
and keeps its best round's model. ``Outcome`` records what a deployment would have spent: sites
work in parallel, so a round costs its slowest site.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from common.codec import EVAL_METRICS
from common.config import NodeConfig
from common.model import build_model, model_vector
from common.server_optimizer import ServerState, step
from common.settings import Settings
from common.stopping import Decision, StopRule, decide, validation_score
from common.training import train_local
from common.windows import WindowSet, concat_windows
from warehouse_node.federated import RoundSettings, adopt_profile, initial_model
from warehouse_node.federated import site_history as _site_history
from warehouse_node.node import Node
from warehouse_node.pipeline import NodeData, holdout_metrics

Report = Callable[[str], None]
MESSAGE_KEYS = ("round-nodes", "denoise-id")  # what the coordinator's messages would add
Sums = dict[str, float]


@dataclass
class Outcome:
    rounds: int  # rounds (epochs of the same size) trained
    best_round: int
    reason: str
    seconds: float  # wall time here (sites one after another)
    deployment_seconds: float  # the slowest site per round, summed (sites in parallel)

    def as_dict(self) -> dict:
        return asdict(self)


def settings(rc: dict, server_round: int = 0) -> RoundSettings:
    """What a node of the run would read from round ``server_round``'s message."""
    run = Settings.of({k: v for k, v in rc.items() if k not in MESSAGE_KEYS}).federation
    nodes, profile = int(rc.get("round-nodes", 1)), str(rc.get("denoise-id", ""))
    return RoundSettings(run, server_round, nodes, max(server_round - 1, 0), "", profile)


def add_sums(parts: list[Sums]) -> Sums:
    return {k: float(sum(p.get(k, 0.0) for p in parts)) for k in EVAL_METRICS if k != "nodes"} | {
        "nodes": len(parts)
    }


def scores_of(cfg: NodeConfig, s: RoundSettings, vector: np.ndarray) -> Sums:
    data = NodeData.load(cfg, s.model.horizon, s.validation, s.model.denoise)
    return holdout_metrics(data, s.model, vector, cfg.data.season)


def until_done(
    rule: StopRule, train_round: Callable[[int], tuple[np.ndarray, Sums | None, float]], report: Report
) -> tuple[np.ndarray, Outcome]:
    """Call ``train_round(r)`` -> (model, summed hold-out sums or None, slowest site's seconds)
    for r = 1, 2, ... until the rule stops; return the best round's model and the outcome."""
    started, spent, scores = time.monotonic(), 0.0, []
    best_vector, decision = None, Decision("continue", 0, 0, "")
    for r in range(1, rule.max_rounds + 1):
        vector, sums, slowest = train_round(r)
        spent += slowest
        if sums is None:  # nothing held out: every round to the cap, the last round's model
            action = "stop" if r == rule.max_rounds else "continue"
            best_vector, decision = vector, Decision(action, r, r, f"round cap: {rule.max_rounds} rounds")
            continue
        scores.append(validation_score(sums, rule.metric))
        decision = decide(scores, rule)
        if decision.best_round == r:
            best_vector = vector
        report(f"round {r}: {decision.reason}")
        if decision.stop:
            break
    outcome = Outcome(
        decision.rounds, decision.best_round, decision.reason, time.monotonic() - started, spent
    )
    return best_vector, outcome


def plaintext_profile(nodes: list[NodeConfig], rc: dict, report: Report) -> dict:
    """The he mode's cross-site profile, summed in plaintext (plain and central modes)."""
    s = settings({**rc, "round-nodes": len(nodes)})
    if not s.denoise.enabled:
        return rc
    histories = [_site_history(cfg, s)[0] for cfg in nodes]
    counts = sum(h.site_groups(len(s.denoise.groups)) for h in histories)
    summed = sum(h.moments(s.denoise, counts) for h in histories)
    profile_id = "plain-" + hashlib.sha256(np.asarray(summed).tobytes()).hexdigest()[:10]
    for cfg in nodes:
        profile = adopt_profile(cfg, s, summed, profile_id)
    report(f"cross-site profile {profile_id}: {int((profile.sites > 0).sum())} groups shared")
    return {**rc, "denoise-id": profile_id}


def _timed(work: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    return work(), time.perf_counter() - t0


def run_plain(nodes: list[NodeConfig], rc: dict, report: Report) -> Outcome:
    """The he mode's rounds in plaintext: the same updates, server step and stopping rule."""
    rc = plaintext_profile(nodes, rc, report)
    opt = settings(rc).optimizer
    state = ServerState.initial(initial_model(settings(rc, 1)))
    weights: np.ndarray | None = None  # the global model the next round starts from

    def train_round(r: int) -> tuple[np.ndarray, Sums | None, float]:
        nonlocal state, weights
        s = settings(rc, r)
        total, weight, slowest = 0.0, 0.0, 0.0
        for cfg in nodes:
            update, seconds = _timed(lambda cfg=cfg: Node(cfg).train(s, weights))
            total, weight = total + update.weight * update.weights, weight + update.weight
            slowest = max(slowest, seconds)
        mean = total / weight
        state = step(opt, state, mean) if opt.stateful else state
        weights = state.model if opt.stateful else mean
        if s.validation == 0:
            return weights, None, slowest
        timed = [_timed(lambda cfg=cfg: scores_of(cfg, s, weights)) for cfg in nodes]
        return weights, add_sums([t[0] for t in timed]), slowest + max(t[1] for t in timed)

    best, outcome = until_done(settings(rc).stop, train_round, report)
    for cfg in nodes:
        Node(cfg).keep_final_model(settings(rc).model, best, outcome.best_round)
    return outcome


def run_local(nodes: list[NodeConfig], rc: dict, report: Report) -> Outcome:
    """Each store alone (no cross-site profile either: it needs the other sites), each with its
    own stopping decision on its own hold-out window; stores would run in parallel."""
    rc = {**rc, "denoise-rank": 0}
    outcomes = []
    for cfg in nodes:
        s0 = settings(rc, 1)
        data = NodeData.load(cfg, s0.model.horizon, s0.validation)
        model, optimizer_state = build_model(s0.model, s0.seed), {}

        def train_round(r: int, cfg=cfg, data=data, model=model, opt=optimizer_state):
            s = settings(rc, r)
            alone = replace(s.train, proximal=0.0)  # no global model to stay near
            _, seconds = _timed(
                lambda: train_local(
                    model, data.train_windows(s.model), alone, s.round_seed, None, opt, cfg.training_device
                )
            )
            vector = model_vector(model)
            sums = None if s.validation == 0 else holdout_metrics(data, s.model, vector, cfg.data.season)
            return vector, sums, seconds

        best, outcome = until_done(settings(rc).stop, train_round, lambda line: None)
        Node(cfg).keep_final_model(s0.model, best, outcome.best_round)
        report(f"{cfg.name}: trained alone, {outcome.reason}")
        outcomes.append(outcome)
    rounds = [o.rounds for o in outcomes]
    return Outcome(
        max(rounds),
        int(np.median([o.best_round for o in outcomes])),
        f"each store on its own validation: {min(rounds)}..{max(rounds)} rounds",
        sum(o.seconds for o in outcomes),
        max(o.deployment_seconds for o in outcomes),
    )


def pooled_windows(nodes: list[NodeConfig], rc: dict, report: Report) -> tuple[RoundSettings, WindowSet, int]:
    """Every node's training windows in one set (what centralized training sees), the settings,
    and the batches of one federated round (all nodes' batches together)."""
    s = settings(plaintext_profile(nodes, rc, report), 1)
    loaded = [NodeData.load(c, s.model.horizon, s.validation, s.model.denoise) for c in nodes]
    sets = [d.train_windows(s.model) for d in loaded]
    batches = sum(min(-(-len(w) // s.train.batch_size), s.train.max_batches_per_epoch) for w in sets)
    pooled = concat_windows(sets)
    report(f"pooled {len(pooled)} windows of {len(nodes)} nodes; {batches} batches per round")
    return s, pooled, batches


def run_central(nodes: list[NodeConfig], rc: dict, report: Report) -> Outcome:
    """All data in one place: one model, rounds of every store's batches, the summed hold-out."""
    rc = plaintext_profile(nodes, rc, report)
    s0, pooled, batches = pooled_windows(nodes, rc, lambda line: None)
    model, optimizer_state = build_model(s0.model, s0.seed), {}
    device = nodes[0].training_device  # the simulation's one device (SimulationSettings.device)

    def train_round(r: int) -> tuple[np.ndarray, Sums | None, float]:
        s = settings(rc, r)
        every_batch = replace(s.train, max_batches_per_epoch=batches, proximal=0.0)
        _, seconds = _timed(
            lambda: train_local(model, pooled, every_batch, s.round_seed, None, optimizer_state, device)
        )
        vector = model_vector(model)
        if s.validation == 0:
            return vector, None, seconds
        timed, evaluating = _timed(lambda: add_sums([scores_of(cfg, s, vector) for cfg in nodes]))
        return vector, timed, seconds + evaluating

    best, outcome = until_done(settings(rc).stop, train_round, report)
    for cfg in nodes:
        Node(cfg).keep_final_model(s0.model, best, outcome.best_round)
    return outcome
