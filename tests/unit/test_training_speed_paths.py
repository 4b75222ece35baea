"""The faster training paths of common.training give the same numbers as the plain ones: batches
gathered as tensors equal ``WindowSet.batch``, and training with them and the multi-tensor AdamW
ends in bit-identical weights and loss (the per-tensor loop it replaced is spelled out here)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from common.model import ModelConfig, build_model, model_vector, pinball_loss
from common.training import (
    BatchSource,
    TrainConfig,
    _forward,
    _tensors,
    cosine_factor,
    train_local,
    window_weight,
)
from common.windows import build_windows, concat_windows, like_forecasts, series_stats
from tests.conftest import model_config, toy_panel, train_config


def _windows(cfg: ModelConfig, **kwargs):
    panel = toy_panel(n_series=5, periods=160)
    return build_windows(panel, series_stats(panel, ("category",)), cfg.lookback, cfg.horizon, **kwargs)


def test_gathered_batches_equal_window_set_batches():
    cfg = model_config(lookback=14, horizon=5, hidden=8, heads=2)
    plain = _windows(cfg)
    ragged = concat_windows([plain, replace(plain, index=plain.index[::3])])  # unequal padding, subsets
    for windows in (plain, like_forecasts(plain), ragged):
        source = BatchSource(windows)
        rng = np.random.default_rng(0)
        for rows in (rng.permutation(len(windows))[:37], np.arange(len(windows)), np.array([0])):
            want, got = _tensors(windows.batch(rows)), source.batch(rows)
            assert want.keys() == got.keys()
            for key in want:
                assert got[key].dtype == want[key].dtype, key
                assert got[key].is_contiguous(), key
                assert torch.equal(got[key], want[key]), key


def _reference_fit(model, windows, cfg: TrainConfig, seed: int) -> float:
    """``train_local`` as it was: numpy batches, per-tensor AdamW."""
    rng = np.random.default_rng(seed)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4, foreach=False
        )
        per_epoch = min(-(-len(windows) // cfg.batch_size), cfg.max_batches_per_epoch)
        total, step = cfg.epochs * per_epoch, 0
        start, stop = cfg.progress
        model.train()
        for _ in range(cfg.epochs):
            order = rng.permutation(len(windows))
            for k in range(per_epoch):
                b = _tensors(windows.batch(order[k * cfg.batch_size : (k + 1) * cfg.batch_size]))
                for group in optimizer.param_groups:
                    group["lr"] = cfg.learning_rate * cosine_factor(start + (stop - start) * step / total)
                weight = window_weight(b["log_scale"], cfg.scale_weight)
                loss = pinball_loss(_forward(model, b), b["target"], model.cfg.quantiles, weight)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                losses.append(loss.detach())
                step += 1
    return float(torch.stack(losses).double().mean().item())


@pytest.mark.parametrize("anchor", ["level", "seasonal"])
def test_training_is_bit_identical_to_the_per_tensor_loop(anchor):
    cfg = model_config(lookback=14, horizon=5, hidden=8, heads=2, anchor=anchor)
    windows = _windows(cfg, lag=52)
    train = train_config(
        epochs=2, batch_size=32, max_batches_per_epoch=3, scale_weight=1.0, progress=(0.2, 0.4)
    )
    fast, slow = build_model(cfg, 5), build_model(cfg, 5)
    loss = train_local(fast, windows, train, seed=11)
    assert loss == _reference_fit(slow, windows, train, seed=11)
    assert np.array_equal(model_vector(fast), model_vector(slow))


def test_optimizer_state_carries_over_between_rounds():
    cfg = model_config(lookback=14, horizon=5, hidden=8, heads=2)
    windows = _windows(cfg)
    train = train_config(epochs=1, batch_size=32, max_batches_per_epoch=2)
    state: dict = {}
    model = build_model(cfg, 1)
    train_local(model, windows, train, seed=1, optimizer_state=state)
    steps = [float(s["step"]) for s in state["state"].values()]
    state["param_groups"][0]["foreach"] = None  # as an older node saved it: the per-tensor loop on a CPU
    train_local(model, windows, train, seed=2, optimizer_state=state)
    assert [float(s["step"]) for s in state["state"].values()] == [s + 2 for s in steps]
    assert state["param_groups"][0]["foreach"] is True
