"""A site opens for the planner only a published kind of sum, over enough sites; nothing else.

Unit checks of the site's rule first, then through the real apps in one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common import crypto
from common.codec import METRIC_SCALE_BITS, NETWORK_TOTALS, PUBLISHED_METRICS, ROUND_METRICS
from common.config import load_node_config
from common.network import DIGIT_SCALE_BITS, Layout, to_digits
from coordinator import publish
from coordinator.checkpoints import PROGRESS_FILE
from coordinator.planner.inprocess import run_inprocess
from coordinator.server_app import app as server_app
from tests.conftest import run_config
from warehouse_node import client_app as client_module
from warehouse_node import journal
from warehouse_node.published import RefusedToOpen, check_first_opening, open_sum

LAYOUT = Layout.of("sku", "SKU-0000,SKU-0001", 14)


# abs_err_model, abs_err_naive, pinball_scaled, covered_80, points, weight·train loss, train weight
SUMS = [1000.0, 2000.0, 400.0, 160.0, 200.0, 60.0, 300.0]


def _metrics(public_key, sites: int) -> crypto.EncryptedVector:
    return crypto.encrypt(public_key, np.array([*SUMS, float(sites)]), METRIC_SCALE_BITS)


def _network(public_key, sites: int) -> crypto.EncryptedVector:
    cells = np.full(LAYOUT.cells, 5.0)
    cells[-1] = sites
    return crypto.encrypt(public_key, to_digits(cells), DIGIT_SCALE_BITS)


def test_a_site_opens_a_round_metrics_sum_of_enough_sites(secret_key, public_key):
    values, sites = open_sum(secret_key, ROUND_METRICS, _metrics(public_key, 3), 2)
    assert sites == 3 and len(values) == len(PUBLISHED_METRICS)  # ratios, never the raw sums
    np.testing.assert_allclose(values, [0.2, 5.0, 10.0, 2.0, 0.8, 3.0], rtol=2e-3)
    values, sites = open_sum(secret_key, NETWORK_TOTALS, _network(public_key, 3), 3, LAYOUT)
    assert sites == 3 and np.allclose(values[:-1], 5.0)


def test_a_site_refuses_a_sum_that_counts_fewer_sites_than_the_minimum(secret_key, public_key):
    with pytest.raises(RefusedToOpen, match="counts 1 sites, fewer than 2"):
        open_sum(secret_key, ROUND_METRICS, _metrics(public_key, 1), 2)
    with pytest.raises(RefusedToOpen, match="counts 3 sites, fewer than 4"):
        open_sum(secret_key, ROUND_METRICS, _metrics(public_key, 3), 4)
    with pytest.raises(RefusedToOpen, match="counts 1 sites, fewer than 2"):  # a run cannot go below 2
        open_sum(secret_key, ROUND_METRICS, _metrics(public_key, 1), 0)
    with pytest.raises(RefusedToOpen, match="counts 2 sites, fewer than 3"):  # nor the network below 3
        open_sum(secret_key, NETWORK_TOTALS, _network(public_key, 2), 2, LAYOUT)


def test_a_site_refuses_a_vector_that_is_not_a_published_kind_of_sum(secret_key, public_key):
    model = crypto.encrypt(public_key, np.ones(5000))  # a model update, or the global state
    with pytest.raises(RefusedToOpen, match="'state' is not a kind of sum this site opens"):
        open_sum(secret_key, "state", model, 2)
    with pytest.raises(RefusedToOpen, match="has 8 values, this one 5000: not opened"):
        open_sum(secret_key, ROUND_METRICS, model, 2)
    with pytest.raises(RefusedToOpen, match="does not share network totals"):  # [network] share = false
        open_sum(secret_key, NETWORK_TOTALS, _network(public_key, 3), 3)


def test_a_site_opens_one_sum_per_round_and_one_network_sum_per_run(nodes):
    """Two different sums of one round would give the site that differs by subtraction."""
    cfg = load_node_config(nodes[0][0])
    check_first_opening(cfg, "run-a", ROUND_METRICS, 1, "digest-1")
    check_first_opening(cfg, "run-a", ROUND_METRICS, 1, "digest-1")  # the same sum again (a resume)
    with pytest.raises(RefusedToOpen, match="already opened another round-metrics sum in this round 1"):
        check_first_opening(cfg, "run-a", ROUND_METRICS, 1, "digest-2")
    check_first_opening(cfg, "run-a", ROUND_METRICS, 2, "digest-2")  # the next round
    check_first_opening(cfg, "run-b", ROUND_METRICS, 1, "digest-3")  # another run
    check_first_opening(cfg, "run-a", NETWORK_TOTALS, 2, "digest-4")
    with pytest.raises(RefusedToOpen, match="already opened another network-totals sum in this run"):
        check_first_opening(cfg, "run-a", NETWORK_TOTALS, 3, "digest-5")


def test_a_site_refuses_a_sum_under_another_key(secret_key, tmp_path):
    crypto.keygen(tmp_path / "other")
    other = crypto.load_context(tmp_path / "other" / crypto.PUBLIC_CONTEXT_FILE)
    with pytest.raises(crypto.KeyMismatchError):
        open_sum(secret_key, ROUND_METRICS, _metrics(other, 3), 2)


# ---- through the real apps in one process ------------------------------------------------------
def _published(ckpt: Path) -> list[dict]:
    history = json.loads((ckpt / PROGRESS_FILE).read_text())["history"]
    return [h for h in history if h["phase"] == "publish"]


def test_sites_open_each_rounds_sum_and_it_adds_up_to_their_own_scores(nodes, keys, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_inprocess(server_app, client_module.app, nodes[0], run_config(keys, ckpt, rounds=2))
    opened = _published(ckpt)
    assert [(h["round"], h["replies"]) for h in opened] == [(1, 3), (2, 3)]
    for h in opened:
        own = [
            next(e for e in journal.read_holdout(load_node_config(d))["rounds"] if e["round"] == h["round"])
            for d in nodes[0]
        ]
        points = sum(e["points"] for e in own)
        assert set(h["metrics"]) == set(PUBLISHED_METRICS) and h["metrics"]["nodes"] == 3
        for mine, opened in (
            ("mae", "holdout_mae"),
            ("naive_mae", "naive_mae"),
            ("coverage_80", "coverage_80"),
        ):
            pooled = sum(e[mine] * e["points"] for e in own) / points
            assert h["metrics"][opened] == pytest.approx(pooled, rel=1e-3, abs=1e-3)
        assert h["metrics"]["train_pinball"] > 0


def test_sites_refuse_to_open_a_model_or_a_sum_of_too_few_sites_and_the_run_goes_on(
    nodes, keys, tmp_path, monkeypatch
):
    ckpt = tmp_path / "ckpt"
    real = publish.open_by_sites

    def dressed_as_metrics(strategy, grid, kind, vec, *rest):  # a curious coordinator
        state = ckpt / "round_0001.state.ckks"  # the global model, presented as the round's metrics
        return real(strategy, grid, kind, crypto.EncryptedVector.from_bytes(state.read_bytes()), *rest)

    monkeypatch.setattr(publish, "open_by_sites", dressed_as_metrics)
    run_inprocess(server_app, client_module.app, nodes[0], run_config(keys, ckpt, rounds=1))
    monkeypatch.undo()
    (h,) = _published(ckpt)
    assert h["metrics"] is None and h["replies"] == 0
    assert sum("not opened" in line for line in h["refused"]) == 3  # every site refused it
    ckpt2 = tmp_path / "ckpt2"
    rc = {**run_config(keys, ckpt2, rounds=1), "publish-min-sites": 4}
    run_inprocess(server_app, client_module.app, nodes[0], rc)
    (h,) = _published(ckpt2)
    assert h["metrics"] is None
    assert sum("counts 3 sites, fewer than 4" in line for line in h["refused"]) == 3
    assert json.loads((ckpt2 / PROGRESS_FILE).read_text())["outcome"]["round"] == 1  # the run went on
