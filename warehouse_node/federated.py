"""A node's round: the settings a message brings, and the local update (no Flower, no ciphertexts).

The node's update is averaged FedAvg-style: each node's weights weighted by its training windows
(common/codec.py lays out what travels). A server learning rate η (FedOpt's server step, which a
coordinator that cannot read the model cannot take) is applied by every node to its own update
before it is encrypted: it sends w = w_global + η·(w_trained − w_global), so the average is
w_global + η·(mean update). Each node keeps its own AdamW state between rounds (NODE/private)
instead of restarting the optimizer every round; on store_item that lowered the federated MAE at
both origins tried before the benchmark window, and on Walmart it changed nothing (BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from common.config import NodeConfig
from common.denoise import (
    PROFILE_FILE,
    DenoiseError,
    Profile,
    SiteHistory,
    grid_dates,
)
from common.files import owner_only
from common.model import build_model, model_vector
from common.network import MIN_SITES
from common.settings import FederationSettings, typed
from common.training import TrainConfig
from warehouse_node.pipeline import NodeData, group_labels, local_update

OPTIMIZER_FILE = "optimizer.pt"  # NODE/private: this node's optimizer state after its last round
# The model's fields in the order the tags of saved optimizer states were made with
TAGGED_MODEL_FIELDS = (
    *("lookback", "horizon", "hidden", "heads", "dropout", "quantiles", "anchor", "denoise", "season_blend"),
)


class UpdateRefused(ValueError):
    """This site's own update is not sent (the coordinator is told why: no data in it)."""


@dataclass(frozen=True)
class RoundSettings:
    """The run's settings (common/settings.py) and what one message adds to them."""

    run: FederationSettings
    server_round: int  # 0: before round 1 (the cross-site profile)
    nodes: int  # replies the coordinator will add this round (bounds what one may send)
    global_round: int  # the aggregate round the message's global state comes from
    run_token: str  # the coordinator's name for this run: keys the replicated server state
    denoise_id: str  # digest of the run's summed moments, announced by the coordinator

    @classmethod
    def of(cls, config: Mapping) -> RoundSettings:
        """From a message's config record; a missing or mistyped setting is refused by name."""
        server_round = typed("server-round", config.get("server-round", 0), int)
        return cls(
            FederationSettings.of(config),
            server_round,
            typed("round-nodes", config.get("round-nodes", 1), int),
            typed("global-round", config.get("global-round", max(server_round - 1, 0)), int),
            str(config.get("run-token", "")),
            str(config.get("denoise-id", "")),
        )

    @property
    def round_seed(self) -> int:
        return self.seed * 1009 + self.server_round

    @property
    def train(self) -> TrainConfig:
        """The run's training, with this round's place in the run (the learning-rate schedule)."""
        rounds, r = self.stop.max_rounds, self.server_round
        return replace(self.run.train, progress=((r - 1) / rounds, r / rounds) if r else (0.0, 1.0))

    model = property(lambda self: self.run.model)
    seed = property(lambda self: self.run.seed)
    validation = property(lambda self: self.run.validation)
    privacy = property(lambda self: self.run.privacy)
    network = property(lambda self: self.run.network)
    network_min_sites = property(lambda self: self.run.network_min_sites)
    publish_min_sites = property(lambda self: self.run.publish_min_sites)
    denoise = property(lambda self: self.run.denoise)
    optimizer = property(lambda self: self.run.server)
    stop = property(lambda self: self.run.stop)


def initial_model(s: RoundSettings) -> np.ndarray:
    """Round 1's seeded model: the same at every node."""
    return model_vector(build_model(s.model, s.seed * 1009 + 1))


def round_start(s: RoundSettings, weights: np.ndarray | None) -> np.ndarray:
    """The weights this round's training started from: the global model, or round 1's seeded one."""
    return weights if weights is not None else initial_model(s)


def server_step(start: np.ndarray, trained: np.ndarray, rate: float) -> np.ndarray:
    """This node's share of the server step: start + η·(trained − start); η = 1 is FedAvg."""
    return trained if rate == 1.0 else start + rate * (trained - start)


def _run_tag(s: RoundSettings) -> str:
    """What an optimizer state belongs to: the run's model and training settings, not the round."""
    t, m = s.train, s.model.to_dict()
    model = {k: m[k] for k in TAGGED_MODEL_FIELDS}
    run = (model, s.seed, t.epochs, t.learning_rate, t.batch_size, t.max_batches_per_epoch)
    extra = (t.proximal,) if t.proximal else ()  # runs without it keep the tags they had
    return hashlib.sha256(repr((run, t.scale_weight, *extra, s.denoise_id)).encode()).hexdigest()[:16]


def load_optimizer_state(cfg: NodeConfig, s: RoundSettings) -> dict:
    """The optimizer state this node saved after the previous round of the same run, else none
    (a fresh optimizer). An unreadable file only costs the momentum: it is overwritten this round."""
    path = cfg.private_dir / OPTIMIZER_FILE
    if s.server_round <= 1 or not path.is_file():
        return {}
    try:
        saved = torch.load(path, weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError):
        return {}
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        return {}
    same_run = saved.get("run") == _run_tag(s) and saved.get("round") == s.server_round - 1
    return saved["state"] if same_run else {}


def round_update(
    cfg: NodeConfig,
    data: NodeData,
    s: RoundSettings,
    weights: np.ndarray | None,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Train one round from the global model, continuing this node's own optimizer state, on the
    site's own ``[training] device``.
    Return (the round's start, start + η·(trained − start), training windows, train loss)."""
    state = load_optimizer_state(cfg, s)
    new, windows, loss = local_update(
        data, s.model, s.train, weights, s.round_seed, on_epoch, state, cfg.training_device
    )
    if not np.all(np.isfinite(new)) or not np.isfinite(loss):
        raise UpdateRefused("local training produced NaN or infinite weights: update not sent")
    saved = {"run": _run_tag(s), "round": s.server_round, "state": state}
    with owner_only(cfg.private_dir) as private:
        torch.save(saved, private / OPTIMIZER_FILE)
    start = round_start(s, weights)
    if s.optimizer.stateful:  # the step is taken after decryption, by every node (global_model)
        return start, new, windows, loss
    return start, server_step(start, new, s.optimizer.learning_rate), windows, loss


def check_sites(s: RoundSettings, sites: float) -> None:
    """A site takes part in the profile only when the sum will hold enough sites."""
    minimum = max(s.denoise.min_sites, MIN_SITES)
    if min(s.nodes, round(sites)) < minimum:
        raise DenoiseError(
            f"the cross-site profile would sum {min(s.nodes, round(sites))} sites, fewer than the minimum "
            f"of {minimum}: this site keeps its history"
        )


def _grid(cfg: NodeConfig, s: RoundSettings) -> tuple[NodeData, pd.DatetimeIndex]:
    data = NodeData.load(cfg, s.model.horizon, s.validation)
    return data, grid_dates(data.cutoff, s.denoise.periods, cfg.data.period_freq)


def site_history(cfg: NodeConfig, s: RoundSettings) -> tuple[SiteHistory, str]:
    """This site's series of the shared groups on the run's grid, and the grid's last date."""
    data, grid = _grid(cfg, s)
    labels = group_labels(cfg, s.denoise.group_by)
    history = SiteHistory.of(data.train, data.stats.scale, labels, s.denoise, grid)
    return history, grid[-1].date().isoformat()


def adopt_profile(cfg: NodeConfig, s: RoundSettings, summed: np.ndarray, profile_id: str) -> Profile:
    """Keep the shapes of the network's summed moments in NODE/private (checked site counts)."""
    end = _grid(cfg, s)[1][-1]
    profile = Profile.from_moments(summed, s.denoise, end, cfg.data.period_freq, profile_id)
    with owner_only(cfg.private_dir) as private:
        profile.save(private / PROFILE_FILE)
    return profile


def check_profile(cfg: NodeConfig, profile_id: str) -> None:
    """Training with another run's shapes would silently change the inputs: refuse it."""
    held = Profile.load(cfg.private_dir / PROFILE_FILE).profile_id
    if profile_id and held != profile_id:
        raise DenoiseError(f"this node's cross-site profile is {held}, the run announces {profile_id}")
