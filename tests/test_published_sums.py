"""A site opens for the planner only a published kind of sum, over enough sites; nothing else.

Unit checks of the site's rule first, then through the real apps in one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common import crypto
from common.config import load_node_config
from common.network import DIGIT_SCALE_BITS, Layout, to_digits
from common.records import EVAL_METRICS, METRIC_SCALE_BITS, NETWORK_TOTALS, ROUND_METRICS
from coordinator import publish
from coordinator.inprocess import run_inprocess
from coordinator.server_app import app as server_app
from coordinator.strategy import PROGRESS_FILE
from tests.conftest import run_config
from warehouse_node import client_app as client_module
from warehouse_node import journal
from warehouse_node.published import RefusedToOpen, open_sum

LAYOUT = Layout.of("sku", "SKU-0000,SKU-0001", 14)


def _metrics(public_key, sites: int) -> crypto.EncryptedVector:
    values = np.append(np.arange(1.0, len(EVAL_METRICS)), float(sites))
    return crypto.encrypt(public_key, values, METRIC_SCALE_BITS)


def _network(public_key, sites: int) -> crypto.EncryptedVector:
    cells = np.full(LAYOUT.cells, 5.0)
    cells[-1] = sites
    return crypto.encrypt(public_key, to_digits(cells), DIGIT_SCALE_BITS)


def test_a_site_opens_a_round_metrics_sum_of_enough_sites(secret_key, public_key):
    values, sites = open_sum(secret_key, ROUND_METRICS, _metrics(public_key, 3), 2)
    assert sites == 3 and np.allclose(values[:-1], np.arange(1.0, len(EVAL_METRICS)), atol=0.1)
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
    with pytest.raises(RefusedToOpen, match="no network layout"):
        open_sum(secret_key, NETWORK_TOTALS, _network(public_key, 3), 3)


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
        assert round(h["metrics"]["nodes"]) == 3 and h["metrics"]["points"] == pytest.approx(points, abs=0.5)
        mae = sum(e["mae"] * e["points"] for e in own)
        assert h["metrics"]["abs_err_model"] == pytest.approx(mae, rel=1e-3)
        assert h["metrics"]["train_weight"] > 0 and h["metrics"]["weight_x_train_pinball"] > 0


def test_sites_refuse_to_open_a_model_or_a_sum_of_too_few_sites_and_the_run_goes_on(
    nodes, keys, tmp_path, monkeypatch
):
    ckpt = tmp_path / "ckpt"
    real = publish.open_by_sites

    def dressed_as_metrics(strategy, grid, kind, vec, config, timeout):  # a curious coordinator
        state = ckpt / "round_0001.state.ckks"  # the global model, presented as the round's metrics
        return real(
            strategy, grid, kind, crypto.EncryptedVector.from_bytes(state.read_bytes()), config, timeout
        )

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
