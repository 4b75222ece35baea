"""Local training, evaluation and prediction on a WindowSet (no Flower, no encryption)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from common.model import DemandForecaster, pinball_loss
from common.settings import TrainConfig
from common.windows import PAST_ONLY, WindowSet

MIN_LR_FACTOR = 0.1


def cosine_factor(progress: float) -> float:
    return MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _tensors(batch: dict[str, np.ndarray], device: torch.device | None = None) -> dict[str, torch.Tensor]:
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    if device is None or device.type == "cpu":
        return tensors
    return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}


class BatchSource:
    """``WindowSet.batch`` as torch tensors, gathered straight into contiguous memory.

    ``WindowSet.batch`` gathers [B, L+H, F] with numpy fancy indexing and slices it into views that
    ``_tensors`` then copies again to make them contiguous. Here the window arrays are wrapped
    once (no copy; the known-future columns, which the horizon reads, are copied once into their
    own contiguous array) and each batch is one ``index_select`` per input, into the layout the
    model takes. Same values, same dtypes as ``_tensors(windows.batch(rows))``."""

    def __init__(self, windows: WindowSet) -> None:
        series, width = windows.past.shape[:2]
        self.lookback, self.horizon = windows.lookback, windows.horizon
        past = np.ascontiguousarray(windows.past)
        self.past = torch.from_numpy(past).view(series * width, -1)
        self.known = torch.from_numpy(np.ascontiguousarray(past[..., PAST_ONLY:])).view(series * width, -1)
        self.events = torch.from_numpy(np.ascontiguousarray(windows.events)).view(-1)
        self.target = torch.from_numpy(np.ascontiguousarray(windows.target)).view(-1)
        self.static_ids = torch.from_numpy(np.ascontiguousarray(windows.static_ids))
        self.log_scale = torch.from_numpy(np.ascontiguousarray(windows.log_scale))
        # flat row of each window's origin in the [S * (L + T)] time axis, and its series
        self.origin = torch.from_numpy(windows.index[:, 0] * width + windows.index[:, 1])
        self.series = torch.from_numpy(np.ascontiguousarray(windows.index[:, 0]))
        self.past_steps = torch.arange(-self.lookback, 0)
        self.future_steps = torch.arange(self.horizon)

    def batch(self, rows: np.ndarray, device: torch.device | None = None) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        origin, series = self.origin[rows], self.series[rows]
        past = (origin[:, None] + self.past_steps).view(-1)
        future = (origin[:, None] + self.future_steps).view(-1)
        n = len(rows)
        tensors = {
            "past": self.past.index_select(0, past).view(n, self.lookback, -1),
            "future": self.known.index_select(0, future).view(n, self.horizon, -1),
            "past_events": self.events.index_select(0, past).view(n, self.lookback),
            "future_events": self.events.index_select(0, future).view(n, self.horizon),
            "target": self.target.index_select(0, future).view(n, self.horizon),
            "static_ids": self.static_ids.index_select(0, series),
            "log_scale": self.log_scale.index_select(0, series),
        }
        if device is None or device.type == "cpu":
            return tensors
        return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}


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
    device: str = "cpu",
) -> float:
    """Train in place; return the mean pinball loss over the batches seen (scaled units).
    Deterministic for a seed (batch order and dropout), so plaintext and encrypted runs match.
    ``on_epoch(epoch, epochs, mean loss of the epoch)`` reports progress. ``optimizer_state``: an
    optimizer state to continue from (empty: a fresh one), replaced by the state after training.
    ``device`` (``"cuda"``, ``"cuda:1"``, ...) trains there; the model and the optimizer state are
    back on the CPU afterwards, where the federation reads them."""
    if len(windows) == 0:
        raise ValueError("no training windows: the history is shorter than lookback/2 + horizon")
    target = training_device(device)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            losses = _fit(model.to(target), windows, cfg, rng, target, on_epoch, optimizer_state)
        finally:
            model.to("cpu")
    return _mean(losses)


def _fit(
    model: DemandForecaster,
    windows: WindowSet,
    cfg: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    on_epoch: Callable[[int, int, float], None] | None,
    optimizer_state: dict | None,
) -> list[torch.Tensor]:
    """The epochs of ``train_local`` on ``device``; the loss of every batch, left on the device."""
    # foreach: the same arithmetic as the per-tensor loop (bit-identical weights), in a few
    # multi-tensor kernels instead of ~10 small ops per parameter; the CPU default is the loop
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4, foreach=True)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
        for group in optimizer.param_groups:  # a saved state carries its own choice (older ones: None)
            group["foreach"] = True
    batches_per_epoch = min(-(-len(windows) // cfg.batch_size), cfg.max_batches_per_epoch)
    total, step = cfg.epochs * batches_per_epoch, 0
    start, stop = cfg.progress
    source = BatchSource(windows)
    anchor = [p.detach().clone() for p in model.parameters()] if cfg.proximal else []
    model.train()
    losses = []
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(windows))
        for k in range(batches_per_epoch):
            b = source.batch(order[k * cfg.batch_size : (k + 1) * cfg.batch_size], device)
            lr = cfg.learning_rate * cosine_factor(start + (stop - start) * step / total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            weight = window_weight(b["log_scale"], cfg.scale_weight)
            loss = pinball_loss(_forward(model, b), b["target"], model.cfg.quantiles, weight)
            optimizer.zero_grad()
            (loss + _proximal(model, anchor, cfg.proximal) if anchor else loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(loss.detach())  # no .item() per step: it would wait for the GPU
            step += 1
        if on_epoch is not None:
            on_epoch(epoch + 1, cfg.epochs, _mean(losses[-batches_per_epoch:]))
    if optimizer_state is not None:
        optimizer_state.clear()
        optimizer_state.update(_to_cpu(optimizer.state_dict()))
    return losses


def _proximal(model: DemandForecaster, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's μ/2·‖w − w_start‖²; the reported loss stays the pinball loss alone."""
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))


def training_device(name: str) -> torch.device:
    """The torch device called ``name``; a one-line error when this machine has no such device."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown training device {name!r}: use cpu, cuda or cuda:N") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported training device {name!r}: use cpu, cuda or cuda:N")
    gpus = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= gpus:
        found = f"{gpus} CUDA GPU(s)" if gpus else f"no CUDA GPU (torch {torch.__version__})"
        raise ValueError(f"training device {name!r}: this machine has {found}")
    return device


def _mean(losses: list[torch.Tensor]) -> float:
    return float(torch.stack(losses).double().mean().item())


def _to_cpu(state: object) -> object:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_to_cpu(v) for v in state]
    return state


@torch.no_grad()
def predict_scaled(model: DemandForecaster, windows: WindowSet, batch_size: int = 1024) -> np.ndarray:
    """Quantiles in scaled units, [N, H, Q], in window order."""
    model.eval()
    out = [
        _forward(model, _tensors(windows.batch(np.arange(i, min(i + batch_size, len(windows))))))
        for i in range(0, len(windows), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, windows.horizon, len(model.cfg.quantiles)))


def mean_from_quantiles(q: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Mean of the piecewise-linear quantile function (flat beyond the outer levels), last axis Q."""
    grid = np.linspace(0.005, 0.995, 100)
    idx = np.clip(np.searchsorted(levels, grid) - 1, 0, len(levels) - 2)
    lo, hi = np.asarray(levels)[idx], np.asarray(levels)[idx + 1]
    w = np.clip((grid - lo) / (hi - lo), 0.0, 1.0)
    values = q[..., idx] * (1 - w) + q[..., idx + 1] * w
    return values.mean(axis=-1)
