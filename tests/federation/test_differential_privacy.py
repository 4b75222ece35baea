"""Distributed differential privacy: clipped node updates whose noise adds up to the target on the sum."""

import json

import numpy as np
import pytest
from flwr.app import Message

from common import crypto
from common.codec import STATE, UPDATE, read_encrypted
from common.privacy import PrivacySettings, epsilon, privatize
from common.settings import Settings
from coordinator.planner.inprocess import run_inprocess
from coordinator.server_app import app as server_app
from tests.conftest import run_config
from warehouse_node import client_app as client_module


def test_update_is_clipped_to_the_bound_and_keeps_its_direction():
    s = PrivacySettings(clip=2.0, noise_multiplier=1.0, nodes=4)
    start, trained = np.zeros(1000), np.full(1000, 0.5)  # ‖Δ‖ = 15.8 > 2
    noisy, norm = privatize(start, trained, s, np.random.default_rng(3))
    noise = np.random.default_rng(3).normal(0.0, s.node_noise_sd, 1000)
    clipped = noisy - start - noise
    assert norm == pytest.approx(np.sqrt(1000) * 0.5)
    assert np.linalg.norm(clipped) == pytest.approx(2.0)
    assert np.allclose(clipped / np.linalg.norm(clipped), trained / np.linalg.norm(trained))
    small = np.full(1000, 0.01)  # ‖Δ‖ = 0.32 < 2: not clipped
    noisy, _ = privatize(start, small, s, np.random.default_rng(4))
    assert np.allclose(noisy - np.random.default_rng(4).normal(0.0, s.node_noise_sd, 1000), small)


def test_noise_of_the_agreed_number_of_nodes_sums_to_the_target():
    s = PrivacySettings(clip=0.5, noise_multiplier=1.2, nodes=45)
    rng = np.random.default_rng(0)
    total = sum(privatize(np.zeros(50_000), np.zeros(50_000), s, rng)[0] for _ in range(s.nodes))
    assert np.std(total) == pytest.approx(s.noise_multiplier * s.clip, rel=0.02)


def test_epsilon_falls_with_more_noise_and_grows_with_more_rounds():
    def eps(z: float, rounds: int) -> float:
        return epsilon(PrivacySettings(clip=1.0, noise_multiplier=z, nodes=3), rounds)

    assert eps(1.0, 6) > eps(2.0, 6) > eps(4.0, 6)
    assert eps(1.0, 3) < eps(1.0, 6) < eps(1.0, 12)
    # one round at z = 10 is within the classical Gaussian-mechanism bound √(2 ln(1.25/δ)) / z
    assert eps(10.0, 1) <= np.sqrt(2 * np.log(1.25 / 1e-5)) / 10.0


def test_bad_privacy_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="dp-clip > 0, dp-noise > 0"):
        Settings.defaults(dp_clip=1.0, dp_noise=0.0)
    assert Settings.defaults(dp_clip=0.0).federation.privacy is None
    assert Settings.defaults(dp_clip=1.0, min_nodes=5).federation.privacy.nodes == 5
    assert Settings.defaults(dp_clip=1.0, dp_nodes=7, min_nodes=5).min_nodes == 7  # the round minimum


def test_federated_round_with_privacy_weighs_every_node_one_and_reports_epsilon(
    nodes, keys, secret_key, tmp_path
):
    replies: list[Message] = []
    rc = {**run_config(keys, tmp_path / "ckpt", rounds=2), "dp-clip": 0.5, "dp-noise": 1.0}
    run_inprocess(server_app, client_module.app, nodes[0], rc, observer=lambda m, _b: replies.append(m))
    train = [m for m in replies if m.metadata.message_type == "train"]
    weights = [crypto.decrypt(secret_key, read_encrypted(m.content[UPDATE], STATE))[-1] for m in train]
    assert np.allclose(weights, 1.0, atol=1e-6) and len(weights) == 6
    privacy = json.loads((tmp_path / "ckpt" / "progress.json").read_text())["privacy"]
    expected = epsilon(PrivacySettings(clip=0.5, noise_multiplier=1.0, nodes=3), 2)
    assert privacy["epsilon"] == pytest.approx(expected, abs=1e-4) and privacy["nodes"] == 3
