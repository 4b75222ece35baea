"""A site opens for the planner only a published kind of sum, over enough sites; nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from common import crypto
from common.network import DIGIT_SCALE_BITS, Layout, to_digits
from common.records import EVAL_METRICS, METRIC_SCALE_BITS, NETWORK_TOTALS, ROUND_METRICS
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
