"""The stopping rule and the server optimizer: plain functions every node applies alike."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.server_optimizer import ServerOptimizer, ServerState, step
from common.settings import Settings
from common.stopping import StopRule, best_round, decide, validation_score

scores = st.lists(st.floats(0.01, 100, allow_nan=False), min_size=1, max_size=40)


def test_stops_after_patience_rounds_without_improvement_and_keeps_the_best_round():
    rule = StopRule(max_rounds=20, patience=3, min_improvement=0.01)
    seq = [10.0, 8.0, 7.0, 6.99, 7.5, 7.2]  # 6.99 is within 1% of 7.0: not an improvement
    assert [decide(seq[:k], rule).stop for k in range(1, 7)] == [False] * 5 + [True]
    final = decide(seq, rule)
    assert final.best_round == 3 and final.rounds == 6 and final.reason.startswith("no improvement")


def test_the_round_cap_stops_even_while_improving():
    d = decide([5.0, 4.0, 3.0], StopRule(max_rounds=3, patience=5))
    assert d.stop and d.best_round == 3 and d.reason.startswith("round cap")


def test_patience_zero_never_stops_before_the_cap():
    rule = StopRule(max_rounds=10, patience=0)
    assert not decide([1.0, 2.0, 3.0, 4.0, 5.0], rule).stop


@given(scores, st.integers(1, 6), st.floats(0, 0.1))
@settings(max_examples=200, deadline=None)
def test_the_decision_depends_only_on_the_scores_and_the_best_is_never_beaten_by_the_margin(
    seq, patience, gain
):
    rule = StopRule(max_rounds=50, patience=patience, min_improvement=gain)
    d = decide(seq, rule)
    assert d == decide(list(seq), rule)  # deterministic: every node decides alike
    best = seq[d.best_round - 1]
    assert all(s >= best * (1 - gain) or s >= best for s in seq[d.best_round :])
    assert best <= min(seq[: d.best_round])
    if d.stop:  # stops exactly when the best is `patience` rounds old
        assert len(seq) - d.best_round >= patience


def test_a_round_with_nothing_held_out_is_never_best():
    empty = {"abs_err_model": 0.0, "pinball_scaled": 0.0, "points": 0.0}
    assert validation_score(empty, "mae") == float("inf")
    assert best_round([float("inf"), 3.0, float("inf")]) == 2


def test_run_config_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="stop metric"):
        Settings.defaults(num_rounds=5, stop_metric="rmse")
    with pytest.raises(ValueError, match="server optimizer"):
        Settings.defaults(server_optimizer="sgd")
    with pytest.raises(ValueError, match="'stop-patience' must be int"):
        Settings.defaults(stop_patience="soon")


def test_fedadam_follows_the_papers_update():
    opt = ServerOptimizer("fedadam", learning_rate=0.1, momentum=0.9, beta2=0.99, tau=1e-3)
    x0, mean = np.array([1.0, -2.0]), np.array([1.5, -2.5])
    s1 = step(opt, ServerState.initial(x0), mean)
    delta = mean - x0
    m, v = 0.1 * delta, 0.01 * delta**2
    np.testing.assert_allclose(s1.model, x0 + 0.1 * m / (np.sqrt(v) + 1e-3))
    assert s1.round == 1


def test_fedavgm_with_no_momentum_and_rate_one_is_fedavg():
    opt = ServerOptimizer("fedavgm", learning_rate=1.0, momentum=0.0)
    x0, mean = np.arange(4.0), np.arange(4.0) + 0.5
    np.testing.assert_allclose(step(opt, ServerState.initial(x0), mean).model, mean)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi"])
def test_two_sites_with_the_same_aggregates_hold_the_same_state(name, tmp_path):
    opt = ServerOptimizer(name, learning_rate=0.05)
    rng = np.random.default_rng(0)
    a = b = ServerState.initial(rng.normal(size=50))
    for _ in range(5):
        mean = a.model + rng.normal(scale=0.1, size=50)
        a, b = step(opt, a, mean), step(opt, b, mean.copy())
    a.save(tmp_path / "a.npz")
    assert ServerState.load(tmp_path / "a.npz").fingerprint() == b.fingerprint()
