"""Local training, evaluation and prediction on a WindowSet (no Flower, no encryption)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from common.model import DemandForecaster, pinball_loss
from common.windows import WindowSet

MIN_LR_FACTOR = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """``scale_weight`` p weights each window's loss by (series scale)^p: p = 1 trains for error
    in units (what WMAE and on-hand value measure), p = 0 treats every series alike.
    ``progress`` is the part of the whole training run this call covers; the learning rate follows
    one cosine from ``learning_rate`` to a tenth of it over the run (across federated rounds too)."""

    epochs: int = 2
    batch_size: int = 256
    learning_rate: float = 3e-3
    max_batches_per_epoch: int = 60
    grad_clip: float = 1.0
    scale_weight: float = 0.0
    progress: tuple[float, float] = (0.0, 1.0)


def cosine_factor(progress: float) -> float:
    return MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def _forward(model: DemandForecaster, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(
        b["past"], b["future"], b["past_events"], b["future_events"], b["static_ids"], b["log_scale"]
    )


def window_weight(log_scale: torch.Tensor, power: float) -> torch.Tensor | None:
    return torch.expm1(log_scale).clamp_min(1e-6) ** power if power else None


def train_local(
    model: DemandForecaster,
    windows: WindowSet,
    cfg: TrainConfig,
    seed: int,
    on_epoch: Callable[[int, int, float], None] | None = None,
    optimizer_state: dict | None = None,
) -> float:
    """Train in place; return the mean pinball loss over the batches seen (scaled units).
    Deterministic for a seed (batch order and dropout), so plaintext and encrypted runs match.
    ``on_epoch(epoch, epochs, mean loss of the epoch)`` reports progress. ``optimizer_state``: an
    optimizer state to continue from (empty: a fresh one), replaced by the state after training."""
    if len(windows) == 0:
        raise ValueError("no training windows: the history is shorter than lookback/2 + horizon")
    rng = np.random.default_rng(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    batches_per_epoch = min(-(-len(windows) // cfg.batch_size), cfg.max_batches_per_epoch)
    total, step = cfg.epochs * batches_per_epoch, 0
    start, stop = cfg.progress
    model.train()
    losses = []
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(windows))
        for k in range(batches_per_epoch):
            b = _tensors(windows.batch(order[k * cfg.batch_size : (k + 1) * cfg.batch_size]))
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate * cosine_factor(start + (stop - start) * step / total)
            weight = window_weight(b["log_scale"], cfg.scale_weight)
            loss = pinball_loss(_forward(model, b), b["target"], model.cfg.quantiles, weight)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            step += 1
        if on_epoch is not None:
            on_epoch(epoch + 1, cfg.epochs, float(np.mean(losses[-batches_per_epoch:])))
    torch.random.set_rng_state(torch_state)
    if optimizer_state is not None:
        optimizer_state.clear()
        optimizer_state.update(optimizer.state_dict())
    return float(np.mean(losses))


@torch.no_grad()
def predict_scaled(model: DemandForecaster, windows: WindowSet, batch_size: int = 1024) -> np.ndarray:
    """Quantiles in scaled units, [N, H, Q], in window order."""
    model.eval()
    out = [
        _forward(model, _tensors(windows.batch(np.arange(i, min(i + batch_size, len(windows))))))
        for i in range(0, len(windows), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, windows.horizon, len(model.cfg.quantiles)))


@torch.no_grad()
def mean_pinball(model: DemandForecaster, windows: WindowSet) -> float:
    pred = predict_scaled(model, windows)
    target = windows.batch(np.arange(len(windows)))["target"]
    return float(pinball_loss(torch.from_numpy(pred), torch.from_numpy(target), model.cfg.quantiles))


def mean_from_quantiles(q: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Mean of the piecewise-linear quantile function (flat beyond the outer levels), last axis Q."""
    grid = np.linspace(0.005, 0.995, 100)
    idx = np.clip(np.searchsorted(levels, grid) - 1, 0, len(levels) - 2)
    lo, hi = np.asarray(levels)[idx], np.asarray(levels)[idx + 1]
    w = np.clip((grid - lo) / (hi - lo), 0.0, 1.0)
    values = q[..., idx] * (1 - w) + q[..., idx + 1] * w
    return values.mean(axis=-1)
