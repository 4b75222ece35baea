"""Local training, evaluation and prediction on a WindowSet (no Flower, no encryption)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.model import DemandForecaster, pinball_loss
from common.windows import WindowSet


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 256
    learning_rate: float = 3e-3
    max_batches_per_epoch: int = 60
    grad_clip: float = 1.0


def _tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def _forward(model: DemandForecaster, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(b["past"], b["future"], b["static_ids"], b["log_scale"])


def train_local(model: DemandForecaster, windows: WindowSet, cfg: TrainConfig, seed: int) -> float:
    """Train in place; return the mean pinball loss over the batches seen (scaled units)."""
    if len(windows) == 0:
        raise ValueError("no training windows: the history is shorter than lookback/2 + horizon")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    model.train()
    losses = []
    for _ in range(cfg.epochs):
        order = rng.permutation(len(windows))
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        for rows in batches[: cfg.max_batches_per_epoch]:
            b = _tensors(windows.batch(rows))
            loss = pinball_loss(_forward(model, b), b["target"], model.cfg.quantiles)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(loss.item())
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
