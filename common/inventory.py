"""Replenishment decisions and customer-facing strategy from a forecast distribution.

Demand over several periods is the SUM of per-period demand; its quantile is not the sum of
per-period quantiles. We draw sample paths: per-period marginals from the forecast quantiles,
joined by a Gaussian copula with AR(1) correlation rho^|i-j| across the horizon (rho estimated by
the node from its own forecast errors), and take quantiles of the summed paths.

Policy (periodic review every R periods, lead time L, service level α); the levels come from a
policy in common.policies, by default the probabilistic one:
* reorder point s = α-quantile of demand over L; order-up-to S = α-quantile of demand over R + L;
  safety stock = S − mean demand over R + L;
* inventory position IP = on_hand + on_order;
* REPLENISH_NOW when IP ≤ s; WARNING when IP is expected to reach s before the next review
  (IP − mean demand over R ≤ s); OBSERVE otherwise. Replenish and warning propose S − IP, raised to
  the MOQ and rounded up to whole packs;
* promotion advice: the stockout probability over the next R + L periods, per sample path and
  period, from stock on hand, on order (from its due period) and ordered now (after L).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from common.policies import POLICIES, DemandForecast, Policy

REPLENISH_NOW, WARNING, OBSERVE = "REPLENISH_NOW", "WARNING", "OBSERVE"
IN_STOCK, LOW_STOCK, OUT_OF_STOCK = "IN_STOCK", "LOW_STOCK", "OUT_OF_STOCK"
PROMOTE, SUPPRESS, NEUTRAL = "PROMOTE", "SUPPRESS", "NEUTRAL"


@dataclass(frozen=True)
class StrategyConfig:
    promo_uplift: float = 1.3  # demand multiplier assumed for a promotion
    suppress_stockout_prob: float = 0.2  # SUPPRESS above this stockout probability under promotion
    promote_max_stockout_prob: float = 0.05
    promote_min_cover: float = 8.0  # periods of cover left after the horizon to PROMOTE
    paths: int = 4000
    seed: int = 0


def sample_paths(
    quantiles: np.ndarray, levels: tuple[float, ...], rho: float, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Sample [n, H] demand paths from per-period quantiles [H, Q] with AR(1) Gaussian copula."""
    h = quantiles.shape[0]
    u = _ar1_uniforms(rng.standard_normal((n, h)), np.clip(rho, 0.0, 0.99))
    lv = np.asarray(levels)
    paths = np.empty_like(u)
    for t in range(h):  # interpolate the quantile function; flat beyond the outer levels
        paths[:, t] = np.interp(u[:, t], lv, quantiles[t])
    return np.clip(paths, 0.0, None)


def sample_paths_many(
    quantiles: np.ndarray, levels: tuple[float, ...], rho: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``sample_paths`` for many skus at once: quantiles [S, H, Q], rho [S] -> paths [S, n, H]."""
    s, h, _ = quantiles.shape
    rho = np.clip(np.asarray(rho, dtype=float).reshape(s, 1), 0.0, 0.99)
    u = _ar1_uniforms(rng.standard_normal((s, n, h)), rho)
    lv = np.asarray(levels)
    right = np.clip(np.searchsorted(lv, u), 1, len(lv) - 1)  # the level at or above u
    weight = np.clip((u - lv[right - 1]) / (lv[right] - lv[right - 1]), 0.0, 1.0)
    q = np.broadcast_to(quantiles[:, None], (s, n, h, len(lv)))
    low = np.take_along_axis(q, (right - 1)[..., None], -1)[..., 0]
    high = np.take_along_axis(q, right[..., None], -1)[..., 0]
    return np.clip(low + weight * (high - low), 0.0, None)


def ar1_normals(z: np.ndarray, rho: float | np.ndarray) -> np.ndarray:
    """Standard normals (in place of ``z``) with correlation rho^|i-j| along the last axis.

    z_t = rho z_{t-1} + sqrt(1 - rho^2) e_t: the Cholesky factor's rows without a BLAS call (numpy's
    BLAS threads and torch's took turns: 4.5x slower, BENCHMARKS.md)."""
    keep = np.sqrt(1 - np.asarray(rho) * rho)
    for t in range(1, z.shape[-1]):
        z[..., t] = rho * z[..., t - 1] + keep * z[..., t]
    return z


def _ar1_uniforms(z: np.ndarray, rho: float | np.ndarray) -> np.ndarray:
    """Uniforms whose normal scores follow ``ar1_normals``."""
    return torch.special.ndtr(torch.from_numpy(ar1_normals(z, rho))).numpy()


def horizon_correlation(pred: np.ndarray, actual: np.ndarray, levels: tuple[float, ...]) -> float:
    """Lag-1 correlation of normal scores of forecast errors along the horizon.

    pred [N, H, Q], actual [N, H]. PIT values come from interpolating the forecast CDF."""
    lv = np.asarray(levels)
    pit = np.array(
        [
            [
                np.interp(a, q, lv, left=lv[0] / 2, right=(1 + lv[-1]) / 2)
                for a, q in zip(row_a, row_q, strict=True)
            ]
            for row_a, row_q in zip(actual, pred, strict=True)
        ]
    )
    if pit.shape[0] < 3 or pit.shape[1] < 2:
        return 0.5
    z = torch.special.ndtri(torch.from_numpy(np.clip(pit, 1e-4, 1 - 1e-4))).numpy()
    a, b = z[:, :-1].ravel(), z[:, 1:].ravel()
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.5
    return float(np.clip(np.corrcoef(a, b)[0, 1], 0.0, 0.95))


def order_quantity(need: float, moq: float, pack_size: float) -> float:
    """Smallest order ≥ need that satisfies the MOQ and is a whole number of packs (0 if no need).
    A fractional pack (0.5 kg) gives a fractional order, never one truncated below the need; a
    whole-number order is an int. A need that is not finite is refused (it would order forever)."""
    if not math.isfinite(need) or not math.isfinite(moq):
        raise ValueError(f"order arithmetic on a number that is not finite (need {need}, MOQ {moq})")
    if need <= 0:
        return 0
    qty = max(need, moq)
    pack = pack_size if math.isfinite(pack_size) and pack_size > 0 else 1
    ratio = qty / pack
    packs = math.ceil(ratio - 1e-9 * max(1.0, ratio))  # 12 / 6 rounded in floating point is 2
    amount = round(float(packs * pack), 9)
    return int(amount) if amount.is_integer() else amount


def review_status(position: float, reorder_point: float, review_demand: float) -> str:
    """REPLENISH_NOW at or below s; WARNING when the demand expected before the next review would
    take the position to s (an order now is the last one that arrives in time); else OBSERVE."""
    if position <= reorder_point:
        return REPLENISH_NOW
    if position - review_demand <= reorder_point:
        return WARNING
    return OBSERVE


def pinned_order_qty(status: str, model_qty: int, need: float, moq: float, pack_size: float) -> int:
    """The order when an operator pins ``status``: none for OBSERVE, else the model's order, or
    one to the order-up-to level when the model proposed none."""
    if status == OBSERVE:
        return 0
    return model_qty if model_qty else order_quantity(need, moq, pack_size)


def stockout_probability(paths: np.ndarray, on_hand: float, arrivals: np.ndarray) -> float:
    """Share of demand paths [n, W] that run out in some period: demand up to period k beyond
    what is on hand plus what arrives at the start of periods 0..k (``arrivals`` [W])."""
    available = on_hand + np.cumsum(arrivals)
    return float((np.cumsum(paths, axis=1) > available + 1e-9).any(axis=1).mean())


def decide(
    row: pd.Series,
    paths: np.ndarray,
    origin: pd.Timestamp,
    freq: str,
    cfg: StrategyConfig,
    policy: Policy = POLICIES["probabilistic"],
    residual_sd: float | None = None,
    pinned_status: str | None = None,
) -> tuple[dict, dict]:
    """One sku's decision and strategy rows from its demand paths [n, H]; ``policy`` sets (s, S).

    The decision is the model's; the strategy counts the order that will be placed: the model's,
    or the one an operator's pinned status gives (``pinned_status``)."""
    lead, review = int(row["lead_time"]), int(row["review_period"])
    alpha = float(row["service_level"])
    on_hand, on_order = float(row["on_hand"]), float(row["on_order"])
    position = on_hand + on_order
    levels = policy.levels(DemandForecast(paths, residual_sd), 0, lead, review, alpha)
    reorder_point, order_up_to = levels.reorder_point, levels.order_up_to
    safety = order_up_to - float(paths[:, : lead + review].sum(1).mean())
    review_demand = float(paths[:, :review].sum(1).mean())
    moq, pack = float(row["moq"]), float(row["pack_size"])
    qty = order_quantity(order_up_to - position, moq, pack)
    nums = f"position {position:.1f} (on hand {on_hand:.1f} + on order {on_order:.1f}), {levels.basis}"
    status = review_status(position, reorder_point, review_demand)
    if status == REPLENISH_NOW:
        why = f"position at or below reorder point: {nums}"
    elif status == WARNING:
        why = (
            f"expected {review_demand:.1f} demand before next review brings position to "
            f"{position - review_demand:.1f} <= reorder point: {nums}"
        )
    else:
        why, qty = f"position above reorder point after next review: {nums}", 0
    if qty and (moq or pack > 1):
        why += f"; order {qty} after MOQ {moq:g} and pack {pack:g}"
    window = lead + review  # until an order placed at the next review would arrive
    unprotected = stockout_probability(paths[:, :window], on_hand, _arrivals(row, window, 0))
    decision = {
        "sku": row["sku"],
        "status": status,
        "order_qty": qty,
        "on_hand": on_hand,
        "on_order": on_order,
        "reorder_point": round(reorder_point, 3),
        "order_up_to": round(order_up_to, 3),
        "safety_stock": round(safety, 3),
        "stockout_risk": round(unprotected, 4),  # if nothing were ordered now: what ranks the urgent
        "reason": why,
    }
    if pinned_status:
        qty = pinned_order_qty(pinned_status, qty, order_up_to - position, moq, pack)
    return decision, _strategy(row, paths, origin, freq, cfg, qty)


def _on_order_due(row: pd.Series) -> int:
    """Periods until the stock on order arrives (the lead time when nothing is on order)."""
    lead = int(row["lead_time"])
    return int(row.get("on_order_due", lead)) if float(row["on_order"]) > 0 else lead


def _arrivals(row: pd.Series, window: int, ordered: int) -> np.ndarray:
    """Units arriving at the start of each of the next ``window`` periods: the stock already on
    order at its due period, and the order placed now after the lead time."""
    lead, due, on_order = int(row["lead_time"]), _on_order_due(row), float(row["on_order"])
    arrivals = np.zeros(window)
    if on_order > 0 and due < window:
        arrivals[due] += on_order
    if ordered and lead < window:
        arrivals[lead] += ordered
    return arrivals


def _restock(
    origin: pd.Timestamp, freq: str, lead: int, due: int, on_order: float, ordered: int
) -> tuple[str, str]:
    """(restock date, its reason): the first stock to arrive, on order or ordered now; none when
    nothing is on order and nothing is ordered (an override that pins OBSERVE)."""
    if on_order > 0 and (not ordered or due <= lead):
        when, what = due, f"{on_order:g} on order arrives in {due} periods"
    elif ordered:
        when, what = lead, f"the {ordered:g} ordered now arrive after the {lead}-period lead time"
    else:
        return "", "; no restock date: nothing is on order and nothing is ordered now"
    restock = str((pd.Period(origin, freq=freq) + when).end_time.date())
    return restock, f"; restock {restock}: {what}"


def _strategy(
    row: pd.Series, paths: np.ndarray, origin: pd.Timestamp, freq: str, cfg: StrategyConfig, ordered: int
) -> dict:
    """Availability promise and promotion advice, counting the stock on order and ``ordered`` now."""
    lead, review = int(row["lead_time"]), int(row["review_period"])
    on_hand, on_order = float(row["on_hand"]), float(row["on_order"])
    per_period = max(float(paths.mean()), 1e-9)
    cover = on_hand / per_period
    if on_hand <= 0:
        availability = OUT_OF_STOCK
    elif cover < lead:
        availability = LOW_STOCK
    else:
        availability = IN_STOCK
    restock, arrival = "", ""
    if availability != IN_STOCK:
        restock, arrival = _restock(origin, freq, lead, _on_order_due(row), on_order, ordered)
    window = lead + review  # until an order placed at the next review arrives
    arrivals = _arrivals(row, window, ordered)
    demand = paths[:, :window]
    p_base = stockout_probability(demand, on_hand, arrivals)
    p_promo = stockout_probability(cfg.promo_uplift * demand, on_hand, arrivals)
    counted = f"on hand {on_hand:g}" + (f" + {on_order:g} on order" if on_order > 0 else "")
    counted += (
        f" + {ordered:g} ordered now (arrives in {lead} periods)" if ordered else ", nothing ordered now"
    )
    after = (on_hand + on_order + ordered - float(paths.sum(1).mean())) / per_period
    h = paths.shape[1]
    risk = (
        f"stockout probability over the next {window} periods {p_base:.0%} as forecast, "
        f"{p_promo:.0%} with a promotion (x{cfg.promo_uplift:g} demand); {counted}"
    )
    if p_promo > cfg.suppress_stockout_prob:
        promotion = SUPPRESS
        why = f"{risk}; {p_promo:.0%} > {cfg.suppress_stockout_prob:.0%}"
    elif after >= cfg.promote_min_cover and p_promo <= cfg.promote_max_stockout_prob:
        promotion = PROMOTE
        why = f"{after:.1f} periods of cover left after the {h}-period horizon "
        why += f">= {cfg.promote_min_cover:g}, {risk}"
    else:
        promotion = NEUTRAL
        why = f"cover after horizon {after:.1f} periods, {risk}"
    cover_text = f"on hand covers {cover:.1f} periods vs lead time {lead}{arrival}"
    return {
        "sku": row["sku"],
        "availability": availability,
        "restock_date": restock,
        "promotion": promotion,
        "reason": f"{availability}: {cover_text}; {promotion}: {why}",
    }
