"""When the federation's model is done: one deterministic rule over the summed validation scores.

Every node decrypts the same summed hold-out sums of every round so far and applies ``decide``;
identical inputs give identical decisions, so the coordinator learns from this step only that the
nodes want to stop (and which round's model they keep), never a score. Local-only and centralized
training in the benchmarks apply the same rule to their own scores, epoch by epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.evaluation import holdout_means

STOP_METRICS = ("mae", "pinball")  # hold-out MAE in units, or mean pinball loss in scaled units
CONTINUE, STOP = "continue", "stop"
REASON_CAP, REASON_PATIENCE = "round cap", "no improvement"


@dataclass(frozen=True)
class StopRule:
    """Stop after ``patience`` rounds without a score below the best so far by at least
    ``min_improvement`` (relative), or at ``max_rounds``; patience 0 never stops early."""

    max_rounds: int
    patience: int = 4
    min_improvement: float = 0.002
    metric: str = "mae"

    def __post_init__(self) -> None:
        if self.metric not in STOP_METRICS:
            raise ValueError(f"stop metric must be one of {', '.join(STOP_METRICS)}, got {self.metric!r}")
        if self.max_rounds < 1 or self.patience < 0 or not 0 <= self.min_improvement < 1:
            raise ValueError(
                "round cap must be ≥ 1, patience ≥ 0 and minimum improvement in [0, 1), got "
                f"{self.max_rounds}, {self.patience}, {self.min_improvement}"
            )


@dataclass(frozen=True)
class Decision:
    action: str  # CONTINUE or STOP
    best_round: int  # 1-based: the round whose global model the nodes keep
    rounds: int  # rounds scored so far
    reason: str  # what the planner reads; never a score

    @property
    def stop(self) -> bool:
        return self.action == STOP

    def as_config(self) -> dict[str, object]:
        return {"decision": self.action, "best-round": self.best_round, "stop-reason": self.reason}


def validation_score(sums: Mapping[str, float], metric: str) -> float:
    """The score a round is judged by, from summed hold-out sums (common/evaluation.py HOLDOUT_SUMS)."""
    if float(sums["points"]) < 0.5:
        return float("inf")  # nothing held out: never an improvement
    return holdout_means(sums)[metric]


def best_round(scores: Sequence[float], min_improvement: float = 0.0) -> int:
    """1-based round of the best score: a later round counts only when it improves on the best
    so far by at least ``min_improvement`` (relative), so near-ties keep the earlier model."""
    best, at = float("inf"), 0
    for i, score in enumerate(scores):
        if score < best * (1 - min_improvement) or (at == 0 and score < best):
            best, at = score, i + 1
    return at


def decide(scores: Sequence[float], rule: StopRule) -> Decision:
    """The decision after ``len(scores)`` rounds (one score per round, in order)."""
    done = len(scores)
    best = best_round(scores, rule.min_improvement) or done
    if done >= rule.max_rounds:
        return Decision(STOP, best, done, f"{REASON_CAP}: {rule.max_rounds} rounds, best round {best}")
    if rule.patience and done - best >= rule.patience:
        reason = (
            f"{REASON_PATIENCE}: {rule.patience} rounds without a validation {rule.metric} at least "
            f"{rule.min_improvement:.1%} below round {best}'s"
        )
        return Decision(STOP, best, done, reason)
    return Decision(CONTINUE, best, done, f"round {done} of at most {rule.max_rounds}, best round {best}")
