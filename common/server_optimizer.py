"""The server step of adaptive federated optimization, taken by every node, never by the coordinator.

The coordinator only adds ciphertexts, so it cannot take FedOpt's server step (Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021). Every node decrypts the same average of the
trained models, so every node can: from the global model x of the round, its pseudo-gradient
Δ = mean(trained) − x and the optimizer's moments, each node computes the same next global model
in float64. The moments are a state replicated at every site (``ServerState``); identical inputs
and IEEE arithmetic keep the copies identical, and ``fingerprint`` lets sites and coordinator
check that they are.

``fedavg`` needs no state (each node applies η to its own update before encrypting, see
warehouse_node/federated.py); the others follow the paper's Algorithm 2:

* fedavgm: m ← β₁·m + Δ,                         x ← x + η·m
* fedadam: m ← β₁·m + (1−β₁)·Δ, v ← β₂·v + (1−β₂)·Δ²,           x ← x + η·m / (√v + τ)
* fedyogi: m as fedadam,        v ← v − (1−β₂)·Δ²·sign(v − Δ²), x ← x + η·m / (√v + τ)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import replaced_atomically

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")


@dataclass(frozen=True)
class ServerOptimizer:
    name: str = "fedavg"
    learning_rate: float = 1.0  # η
    momentum: float = 0.9  # β₁
    beta2: float = 0.99
    tau: float = 1e-3  # adaptivity: how far √v can shrink the step

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise ValueError(
                f"server optimizer must be one of {', '.join(SERVER_OPTIMIZERS)}, got {self.name!r}"
            )
        if not (0 <= self.momentum < 1 and 0 <= self.beta2 < 1 and self.tau > 0):
            raise ValueError(
                "server momentum and beta2 must be in [0, 1) and tau > 0, got "
                f"{self.momentum}, {self.beta2}, {self.tau}"
            )

    @property
    def stateful(self) -> bool:
        return self.name != "fedavg"


@dataclass(frozen=True)
class ServerState:
    """The global model after ``round`` aggregates (round 0: the seeded initial model) and the
    optimizer's moments, all float64."""

    round: int
    model: np.ndarray
    m: np.ndarray
    v: np.ndarray

    @classmethod
    def initial(cls, model: np.ndarray) -> ServerState:
        x = np.asarray(model, dtype=np.float64)
        return cls(0, x, np.zeros_like(x), np.zeros_like(x))

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.model, self.m, self.v):
            digest.update(np.ascontiguousarray(part, dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: Path) -> None:
        with replaced_atomically(path) as out:
            np.savez(out, round=self.round, model=self.model, m=self.m, v=self.v)

    @classmethod
    def load(cls, path: Path) -> ServerState:
        with np.load(path) as z:
            return cls(int(z["round"]), z["model"], z["m"], z["v"])


def step(opt: ServerOptimizer, state: ServerState, mean_trained: np.ndarray) -> ServerState:
    """The next global model from this round's average of trained models."""
    x = state.model
    delta = np.asarray(mean_trained, dtype=np.float64) - x
    if opt.name == "fedavg":
        return ServerState(state.round + 1, x + opt.learning_rate * delta, state.m, state.v)
    if opt.name == "fedavgm":
        m = opt.momentum * state.m + delta
        return ServerState(state.round + 1, x + opt.learning_rate * m, m, state.v)
    m = opt.momentum * state.m + (1 - opt.momentum) * delta
    square = delta * delta
    if opt.name == "fedadam":
        v = opt.beta2 * state.v + (1 - opt.beta2) * square
    else:  # fedyogi
        v = state.v - (1 - opt.beta2) * square * np.sign(state.v - square)
    return ServerState(state.round + 1, x + opt.learning_rate * m / (np.sqrt(v) + opt.tau), m, v)
