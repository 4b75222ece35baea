"""One node's part of a federated round, between its data and the ciphertexts (no Flower here).

The node replies with Enc([n·w, n]) and Enc([n·loss, n]); the coordinator only adds them. From the
summed state Enc([Σn·w, Σn]) each node recovers the global weights w = Σn·w / Σn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from common import crypto
from common.config import NodeConfig
from common.model import DEFAULT_QUANTILES, ModelConfig
from common.training import TrainConfig
from warehouse_node.pipeline import NodeData, holdout_metrics, local_update, save_global_model


def configs_from_record(cfg: Mapping) -> tuple[ModelConfig, TrainConfig, int, int]:
    """Model and training settings chosen by the planner for the whole federation."""
    model = ModelConfig(
        lookback=int(cfg.get("lookback", 28)),
        horizon=int(cfg.get("horizon", 14)),
        hidden=int(cfg.get("hidden", 32)),
        heads=int(cfg.get("heads", 4)),
        quantiles=tuple(cfg.get("quantiles", DEFAULT_QUANTILES)),
    )
    train = TrainConfig(
        epochs=int(cfg.get("local-epochs", 2)),
        learning_rate=float(cfg.get("learning-rate", 3e-3)),
        max_batches_per_epoch=int(cfg.get("max-batches", 60)),
    )
    return model, train, int(cfg.get("seed", 7)), int(cfg.get("server-round", 0))


@dataclass
class NodeSession:
    cfg: NodeConfig
    key: crypto.KeyContext

    @classmethod
    def open(cls, cfg: NodeConfig) -> NodeSession:
        key = crypto.load_context(cfg.secret_context, cfg.key_fingerprint)
        if not key.has_secret_key:
            raise crypto.CryptoError(f"{cfg.secret_context} holds no secret key: a node needs one")
        return cls(cfg, key)

    def recover_weights(self, state: crypto.EncryptedVector) -> np.ndarray:
        summed = crypto.decrypt(self.key, state)
        total = summed[-1]
        if not np.isfinite(total) or total < 0.5:
            raise crypto.CryptoError(f"global state decrypts to a weight total of {total:g}: corrupt")
        return summed[:-1] / total

    def train(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        weights: np.ndarray | None,
        seed: int,
        server_round: int,
    ) -> tuple[crypto.EncryptedVector, crypto.EncryptedVector]:
        data = NodeData.load(self.cfg, model_cfg.horizon)
        new, n, loss = local_update(data, model_cfg, train_cfg, weights, seed * 1009 + server_round)
        state = crypto.encrypt(self.key, np.append(n * new, n))
        metrics = crypto.encrypt(self.key, np.array([n * loss, n], dtype=float))
        return state, metrics

    def evaluate(
        self, model_cfg: ModelConfig, weights: np.ndarray, server_round: int
    ) -> crypto.EncryptedVector:
        """Keep the decrypted global model (private) and return encrypted hold-out error sums."""
        save_global_model(self.cfg, weights, model_cfg, server_round)
        data = NodeData.load(self.cfg, model_cfg.horizon)
        sums = holdout_metrics(data, model_cfg, weights, self.cfg.data.season)
        values = [
            sums[k] for k in ("abs_err_model", "abs_err_naive", "pinball_scaled", "covered_80", "points")
        ]
        return crypto.encrypt(self.key, np.array([*values, 1.0]))
