"""Optional distributed differential privacy for model updates (node-level, Gaussian mechanism).

Each node clips its update Δ = w_local − w_global to L2 norm ``clip`` and adds Gaussian noise of
standard deviation ``noise_multiplier · clip / √nodes``. The coordinator only adds ciphertexts, so
the noise of ``nodes`` replies sums to ``noise_multiplier · clip``: the Gaussian mechanism on the
SUM of clipped updates, whose sensitivity to any one node is ``clip``. Nobody, the planner
included, sees less noisy values than that sum: each node's own reply is encrypted.

With DP on, every reply weighs 1 (not its window count, which would leak the node's size and
break the sensitivity bound), and a round needs at least ``nodes`` valid replies, otherwise the
summed noise would fall short of the target. (ε, δ) over the rounds comes from Google's
``dp_accounting`` (RDP accountant, full participation: every node in every round).

Out of scope: floating-point attacks on the Gaussian sampler, and nodes that add less noise than
agreed (a node can always weaken its own protection, never another node's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrivacySettings:
    clip: float  # L2 bound on one node's update
    noise_multiplier: float  # z: the noise on the sum has standard deviation z · clip
    nodes: int  # replies whose noise adds up to the target (the round's minimum)
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.clip <= 0 or self.noise_multiplier <= 0 or self.nodes < 1 or not 0 < self.delta < 1:
            raise ValueError(
                "differential privacy needs dp-clip > 0, dp-noise > 0, dp-nodes >= 1 and 0 < dp-delta < 1"
            )

    @property
    def node_noise_sd(self) -> float:
        return self.noise_multiplier * self.clip / np.sqrt(self.nodes)


def privatize(
    start: np.ndarray, trained: np.ndarray, s: PrivacySettings, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, float]:
    """Return (start + clipped Δ + this node's share of the noise, the norm of Δ before clipping)."""
    delta = trained - start
    norm = float(np.linalg.norm(delta))
    clipped = delta * min(1.0, s.clip / norm) if norm > 0 else delta
    rng = rng or np.random.default_rng()  # fresh OS entropy: no other party can replay the noise
    return start + clipped + rng.normal(0.0, s.node_noise_sd, size=delta.shape), norm


def epsilon(s: PrivacySettings, rounds: int) -> float:
    """ε after ``rounds`` rounds at δ = ``s.delta`` (RDP accounting of the composed mechanism)."""
    import dp_accounting  # here, not at the top: it loads scipy, ~1.7 s on every ClientApp start

    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(s.noise_multiplier)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(s.delta))


def privacy_report(s: PrivacySettings, rounds: int) -> dict:
    """What a run promises, for progress.json and the planner."""
    return {
        "epsilon": round(epsilon(s, rounds), 4),
        "delta": s.delta,
        "rounds": rounds,
        "noise_multiplier": s.noise_multiplier,
        "clip": s.clip,
        "nodes": s.nodes,
        "accountant": "dp_accounting RDP, Gaussian mechanism on the sum of clipped node updates",
    }
