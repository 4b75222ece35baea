"""LSTM + attention quantile demand model (pure torch; knows nothing of Flower or encryption).

Shaped like a small Temporal Fusion Transformer:

* holiday events: an embedding per named event, added to past and future steps;
* static context: embeddings of static categorical buckets (summed) and the series' log scale;
  it initialises both LSTMs' states and is added to every time step;
* an LSTM encoder over the lookback window (scaled demand, observed mask, known covariates);
* an LSTM decoder over the horizon's known-future covariates, continuing the encoder state;
* multi-head attention from every horizon step to the encoder states, gated residual + layer norm;
* a quantile head whose outputs cannot cross: the median plus cumulative softplus steps up and down,
  optionally learned as a correction to an anchor (the recent level, or demand one season earlier
  shifted by this year's change in level), which the network starts from instead of having to discover it.

Everything is in per-series scaled units (demand / series mean), so warehouses of very different
volume train one shared model; callers multiply by the scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from common.settings import ANCHORS, DEFAULT_QUANTILES, ModelConfig  # noqa: F401 (re-exported)
from common.windows import EVENT_BUCKETS, KNOWN_FEATURES, MAX_STATIC, PAST_ONLY, STATIC_BUCKETS

LAG_SEASON, LAG_KNOWN = KNOWN_FEATURES.index("lag_season"), KNOWN_FEATURES.index("lag_known")
YEAR_POSITION = tuple(KNOWN_FEATURES.index(f) for f in ("year_sin", "year_cos", "year_sin2", "year_cos2"))
RECENT = 8  # periods of recent level for the level anchor
SEASONAL_RECENT = 13  # periods over which the seasonal anchor measures this year's shift
# The shift is a mean of 13 noisy differences; taking 0.7 of it beat the full shift at 6 of 6
# origins before the benchmark window (scripts/benchmark_denoise.py, BENCHMARKS.md)
SHIFT_SHRINK = 0.7


class DemandForecaster(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, k = cfg.hidden, len(KNOWN_FEATURES)
        self.static_embedding = nn.Embedding(STATIC_BUCKETS, h, padding_idx=0)
        self.scale_proj = nn.Linear(1, h)
        self.init_h = nn.Linear(h, h)
        self.init_c = nn.Linear(h, h)
        self.past_proj = nn.Linear(PAST_ONLY + k, h)
        self.future_proj = nn.Linear(k, h)
        self.event_embedding = nn.Embedding(EVENT_BUCKETS, h, padding_idx=0)
        self.encoder = nn.LSTM(h, h, batch_first=True)
        self.decoder = nn.LSTM(h, h, batch_first=True)
        self.attention = nn.MultiheadAttention(h, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.gate = nn.Linear(h, 2 * h)
        self.norm1 = nn.LayerNorm(h)
        self.feed_forward = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), nn.Linear(2 * h, h))
        self.norm2 = nn.LayerNorm(h)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(h, len(cfg.quantiles))
        self.median_index = cfg.quantiles.index(0.5)
        # With a seasonal anchor the yearly shape comes from last season's demand. Fed the position
        # in the year as well, the network memorises last year's anchor errors (one or two
        # instances per week of the year) and repeats them: it scored worse (BENCHMARKS.md notes).
        known_mask = torch.ones(k)
        if cfg.anchor == "seasonal":
            known_mask[list(YEAR_POSITION)] = 0.0
        self.register_buffer("known_mask", known_mask, persistent=False)
        if cfg.anchor != "none":
            self._start_from_anchor()

    @torch.no_grad()
    def _start_from_anchor(self, spacing: float = 0.1) -> None:
        """Zero the head's weights: an untrained model forecasts the anchor itself (median) with
        quantiles ``spacing`` scaled units apart, so training learns corrections instead of first
        unlearning a random offset (which a short federated budget never fully does)."""
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, math.log(math.expm1(spacing)))
        self.head.bias[self.median_index] = 0.0

    def forward(
        self,
        past: torch.Tensor,
        future: torch.Tensor,
        past_events: torch.Tensor,
        future_events: torch.Tensor,
        static_ids: torch.Tensor,
        log_scale: torch.Tensor,
        return_attention: bool = False,
    ):
        """past [B,L,PAST_ONLY+K], future [B,H,K], events [B,L] / [B,H], static_ids [B,S],
        log_scale [B] -> quantiles [B,H,Q]."""
        static = self.static_embedding(static_ids).sum(1) + self.scale_proj(log_scale[:, None])
        state = (torch.tanh(self.init_h(static))[None], torch.tanh(self.init_c(static))[None])
        past = torch.cat([past[..., :PAST_ONLY], past[..., PAST_ONLY:] * self.known_mask], dim=-1)
        future = future * self.known_mask
        past_in = self.past_proj(past) + self.event_embedding(past_events) + static[:, None]
        encoded, state = self.encoder(past_in, state)
        future_in = self.future_proj(future) + self.event_embedding(future_events) + static[:, None]
        decoded, _ = self.decoder(future_in, state)
        attended, weights = self.attention(decoded, encoded, encoded, need_weights=return_attention)
        z = self.norm1(decoded + F.glu(self.gate(self.dropout(attended)), dim=-1))
        z = self.norm2(z + self.dropout(self.feed_forward(z)))
        quantiles = self._monotone(self.head(z))
        if self.cfg.anchor != "none":
            quantiles = quantiles + self._anchor(past, future)[..., None]
        return (quantiles, weights) if return_attention else quantiles

    def _anchor(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """What the quantiles are learned around, [B,H] in scaled units. ``level``: the mean of
        the last RECENT observed periods. ``seasonal``: demand one season earlier (smoothed, see
        ``common.windows``) shifted by SHIFT_SHRINK × how much the last SEASONAL_RECENT periods
        differ from the same periods a season before; the level where there is no season-earlier
        value. Strong for smooth weekly data, too noisy for single days. An additive shift over 13
        periods beat a ratio and shorter spans on origins before the benchmark window (BENCHMARKS.md
        notes)."""
        y, seen = past[..., 0], past[..., 1]
        lag, known = future[..., LAG_SEASON], future[..., LAG_KNOWN]
        weight = seen[:, -RECENT:]
        level = (y[:, -RECENT:] * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        if self.cfg.anchor == "level":
            return level[:, None].expand(-1, future.shape[1])
        n = min(SEASONAL_RECENT, past.shape[1])
        both = seen[:, -n:] * past[:, -n:, PAST_ONLY + LAG_KNOWN]
        gap = ((y[:, -n:] - past[:, -n:, PAST_ONLY + LAG_SEASON]) * both).sum(1) / both.sum(1).clamp_min(1.0)
        shift = torch.where(both.sum(1) >= n / 2, SHIFT_SHRINK * gap, torch.zeros_like(gap))
        return torch.where(known > 0, lag + shift[:, None], level[:, None])

    def _monotone(self, raw: torch.Tensor) -> torch.Tensor:
        m = self.median_index
        median = raw[..., m : m + 1]
        up = median + torch.cumsum(F.softplus(raw[..., m + 1 :]), dim=-1)
        down = median - torch.cumsum(F.softplus(raw[..., :m].flip(-1)), dim=-1).flip(-1)
        return torch.cat([down, median, up], dim=-1)


def pinball_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    quantiles: tuple[float, ...],
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean quantile (pinball) loss; pred [B,H,Q], target [B,H], optional per-window weight [B]."""
    q = torch.tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = target[..., None] - pred
    per_window = torch.maximum(q * diff, (q - 1) * diff).mean(dim=(1, 2))
    if weight is None:
        return per_window.mean()
    return (per_window * weight).sum() / weight.sum().clamp_min(1e-12)


def build_model(cfg: ModelConfig, seed: int) -> DemandForecaster:
    """Same seed, same initial weights on every node: the coordinator never holds a plaintext model."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = DemandForecaster(cfg)
    torch.random.set_rng_state(gen_state)
    return model


def model_vector(model: nn.Module):
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().cpu().double().numpy()


def load_vector(model: nn.Module, vector) -> None:
    expected = sum(p.numel() for p in model.parameters())
    if len(vector) != expected:
        raise ValueError(f"parameter vector has {len(vector)} values, the model needs {expected}")
    flat = torch.as_tensor(vector, dtype=torch.float32)
    torch.nn.utils.vector_to_parameters(flat, model.parameters())


__all__ = ["MAX_STATIC", "DemandForecaster", "ModelConfig", "build_model", "pinball_loss"]
