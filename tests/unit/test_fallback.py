"""The degraded mode: when the global model cannot be trusted, the node forecasts with the
fallback baseline, marks every row with it and why, and replenish and status say so."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from common import crypto
from common.config import load_node_config
from common.model import build_model, model_vector
from tests.conftest import model_config
from warehouse_node import journal
from warehouse_node.cli import cli as node_cli
from warehouse_node.fallback import FALLBACK, MODEL, forecast_or_fallback
from warehouse_node.join import status_lines
from warehouse_node.model_store import MODEL_FILE, save_global_model
from warehouse_node.node import Node

SHAPE = model_config(lookback=21, horizon=7, hidden=16)


@pytest.fixture
def site(nodes, keys):
    cfg = load_node_config(nodes[0][0])
    Node(cfg).prepare()
    return cfg, crypto.load_context(keys / crypto.PUBLIC_CONTEXT_FILE).fingerprint


def _keep(cfg, fingerprint: str, days_ago: float = 0.0) -> np.ndarray:
    vector = model_vector(build_model(SHAPE, 0))
    save_global_model(cfg, vector, SHAPE, 3, MODEL_FILE, fingerprint)
    if days_ago:
        import torch

        blob = torch.load(cfg.private_dir / MODEL_FILE, weights_only=True)
        torch.save({**blob, "saved_at": time.time() - days_ago * 86400}, cfg.private_dir / MODEL_FILE)
    return vector


def _sources(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["source"], frame["source_reason"], strict=True))


def test_without_a_global_model_every_series_gets_the_baseline_with_sane_quantiles(site):
    cfg, _ = site
    frame = forecast_or_fallback(cfg)
    assert _sources(frame) == {
        (FALLBACK, "no global model yet: this site has not finished a federated round")
    }
    assert (
        frame.groupby("sku")["date"].nunique().eq(cfg.fallback_horizon).all()
    )  # [forecast] baseline_horizon
    quantiles = frame.filter(regex=r"^q\d\d$").to_numpy()
    assert np.isfinite(quantiles).all() and (quantiles >= 0).all()
    assert (np.diff(quantiles, axis=1) >= -1e-9).all()  # never crossing
    assert (frame["mean"] >= 0).all() and frame[["residual_sd", "path_corr"]].notna().all().all()


def test_a_model_the_site_can_trust_is_used(site):
    cfg, fingerprint = site
    _keep(cfg, fingerprint)
    frame = forecast_or_fallback(cfg)
    assert _sources(frame) == {(MODEL, "")} and frame.groupby("sku")["date"].nunique().eq(7).all()


def test_a_model_under_another_key_is_not_used(site):
    cfg, fingerprint = site
    _keep(cfg, "0123456789abcdef")
    ((source, reason),) = _sources(forecast_or_fallback(cfg))
    assert source == FALLBACK
    assert (
        reason
        == f"the global model was decrypted under key 0123456789abcdef, this site now holds {fingerprint}"
    )


def test_a_model_older_than_the_configured_age_is_not_used(site):
    cfg, fingerprint = site
    _keep(cfg, fingerprint, days_ago=3)
    assert _sources(forecast_or_fallback(cfg)) == {(MODEL, "")}  # no age limit unless configured
    aged = replace(cfg, max_model_age_days=2)
    ((source, reason),) = _sources(forecast_or_fallback(aged))
    assert source == FALLBACK and reason == (
        "the global model is 3 days old, older than [forecast] max_model_age_days = 2"
    )
    frame = forecast_or_fallback(aged)
    assert frame.groupby("sku")["date"].nunique().eq(SHAPE.horizon).all()  # the federation's horizon


def test_a_model_worse_than_seasonal_naive_on_this_sites_holdout_is_not_used(site):
    cfg, fingerprint = site
    vector = _keep(cfg, fingerprint)
    model = journal.model_fingerprint(vector)
    sums = {
        "abs_err_model": 30.0,
        "abs_err_naive": 20.0,
        "pinball_scaled": 1.0,
        "covered_80": 8.0,
        "points": 10,
    }
    journal.record_holdout(cfg, 1, 3, model, sums)
    ((source, reason),) = _sources(forecast_or_fallback(cfg))
    assert source == FALLBACK
    assert (
        reason
        == "the global model scored worse than seasonal naive on this site's hold-out window (MAE 3 vs 2)"
    )
    journal.record_holdout(cfg, 1, 3, model, {**sums, "abs_err_model": 10.0})  # a later, better score
    assert _sources(forecast_or_fallback(cfg)) == {(MODEL, "")}


def test_replenish_and_status_say_the_forecast_is_the_fallback(site, tmp_path):
    cfg, _ = site
    runner = CliRunner()
    result = runner.invoke(node_cli, ["forecast", "--node", str(cfg.folder)])
    assert result.exit_code == 0, result.output
    forecasts = cfg.out_dir / "forecasts.parquet"
    out = tmp_path / "decide"
    args = [
        "replenish",
        "--forecasts",
        str(forecasts),
        "--stock",
        str(cfg.folder / "stock.csv"),
        "--out",
        str(out),
    ]
    result = runner.invoke(node_cli, args)
    assert result.exit_code == 0, result.output
    cited = "forecast from the fallback baseline (no global model yet"
    for name in ("decisions.csv", "strategy.csv"):
        assert pd.read_csv(out / name)["reason"].str.contains(cited, regex=False).all(), name
    rows = dict(status_lines(journal.read_status(cfg)))
    assert rows["forecast source"] == (
        "FALLBACK baseline: no global model yet: this site has not finished a federated round"
    )
