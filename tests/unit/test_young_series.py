"""A series too young for a hold-out window is still scored safely and still forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.config import load_node_config
from common.model import build_model, model_vector
from tests.conftest import model_config
from warehouse_node.model_store import save_global_model
from warehouse_node.pipeline import NodeData, forecast, holdout_metrics, prepare_node

TOML = """[node]
name = "young"

[data]
path = "sales.csv"
kind = "periods"
frequency = "W-FRI"
timestamp = "Date"
quantity = "Weekly_Sales"
series_keys = ["Dept"]
"""


def test_young_series_do_not_shift_hold_out_scores_or_forecasts(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=60, freq="W-FRI")
    old = pd.DataFrame({"Dept": "1", "Date": weeks, "Weekly_Sales": 100 + np.arange(60) % 5})
    young = pd.DataFrame({"Dept": "2", "Date": weeks[-15:], "Weekly_Sales": 40.0})
    pd.concat([old, young]).to_csv(tmp_path / "sales.csv", index=False)
    (tmp_path / "node.toml").write_text(TOML)
    cfg = load_node_config(tmp_path)
    prepare_node(cfg)
    m = model_config(lookback=26, horizon=13, hidden=8, heads=2)
    data = NodeData.load(cfg, m.horizon)
    assert len(data.holdout_windows(m)) == 1 and len(data.holdout_windows(m).series) == 2
    vector = model_vector(build_model(m, 0))
    sums = holdout_metrics(data, m, vector, season=52)
    assert sums["points"] == 13  # only the old series is scored
    save_global_model(cfg, vector, m, 1)
    fc = forecast(cfg)
    assert sorted(fc["sku"].unique()) == ["1", "2"] and len(fc) == 26
