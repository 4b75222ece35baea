"""Forecasts a node would have made at past reviews: the same as its live forecast at the last
origin, blind to everything after each origin, and one row per series, origin and step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common import crypto
from common.config import load_node_config
from common.model import build_model, model_vector
from tests.conftest import model_config
from warehouse_node.backtest import forecasts_at
from warehouse_node.model_store import MODEL_FILE, save_global_model
from warehouse_node.node import Node
from warehouse_node.pipeline import DEMAND_FILE, forecast, read_private

SHAPE = model_config(lookback=21, horizon=7, hidden=16)


@pytest.fixture
def site(nodes, keys):
    cfg = load_node_config(nodes[0][0])
    Node(cfg).prepare()
    fingerprint = crypto.load_context(keys / crypto.PUBLIC_CONTEXT_FILE).fingerprint
    save_global_model(cfg, model_vector(build_model(SHAPE, 0)), SHAPE, 3, MODEL_FILE, fingerprint)
    return cfg


def test_the_last_origin_gives_the_live_forecast(site):
    last = read_private(site, DEMAND_FILE)["date"].max()
    live = forecast(site).sort_values(["sku", "date"]).reset_index(drop=True)
    past = forecasts_at(site, last, [last], SHAPE.horizon).sort_values(["sku", "date"]).reset_index(drop=True)
    assert (past["date"].to_numpy() == live["date"].to_numpy()).all()
    for column in ("mean", "q05", "q50", "q95", "residual_sd", "path_corr"):
        np.testing.assert_allclose(past[column], live[column], rtol=1e-6, atol=1e-9)


def test_a_forecast_reads_nothing_after_its_origin(site):
    panel = read_private(site, DEMAND_FILE)
    dates = np.sort(panel["date"].unique())
    trained, origins = pd.Timestamp(dates[-40]), [pd.Timestamp(d) for d in dates[-30:-20]]
    before = forecasts_at(site, trained, origins, 3)
    later = panel["date"] > origins[-1]
    panel.loc[later, "demand"] = panel.loc[later, "demand"] * 10 + 5  # a different future
    panel.to_parquet(site.private_dir / DEMAND_FILE, index=False)
    after = forecasts_at(site, trained, origins, 3)
    pd.testing.assert_frame_equal(before, after)
    series = before["sku"].nunique()
    assert len(before) == series * len(origins) * 3
    assert set(before["origin"]) == set(origins)
    assert (before["date"] > before["origin"]).all() and before["step"].between(0, 2).all()
