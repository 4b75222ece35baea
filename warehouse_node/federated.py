"""One node's part of a federated round, between its data and the ciphertexts (no Flower here).

The node replies with Enc([n·w, n·loss, n]), n its FedAvg weight; the coordinator only adds. From
the summed state Enc([Σn·w, Σn·loss, Σn]) each node recovers the global weights w = Σn·w / Σn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common import crypto
from common.config import NodeConfig
from common.denoise import (
    PROFILE_FILE,
    PROFILE_SCALE_BITS,
    DenoiseError,
    DenoiseSettings,
    Profile,
    SiteHistory,
    grid_dates,
)
from common.model import DEFAULT_QUANTILES, ModelConfig, build_model, model_vector
from common.network import DIGIT_SCALE_BITS, MIN_SITES, Layout, NetworkError, site_cells, to_digits
from common.privacy import PrivacySettings, privacy_from_config, privatize
from common.records import (
    METRIC_SCALE_BITS,
    STATE_TAIL,
    WEIGHT_UNIT,
    check_node_settings,
    denoise_settings,
    node_setting,
)
from common.training import TrainConfig
from warehouse_node.pipeline import (
    NodeData,
    forecast,
    group_labels,
    holdout_metrics,
    local_update,
    save_global_model,
)

NETWORK_TOTALS_FILE = "network_totals.parquet"  # NODE/out: what this site put into the network sum


@dataclass(frozen=True)
class RoundSettings:
    """Model and training settings chosen by the planner for the whole federation."""

    model: ModelConfig
    train: TrainConfig
    seed: int
    server_round: int
    validation: int | None  # periods held out for scoring; None = one horizon; 0 = none
    privacy: PrivacySettings | None = None  # differential privacy of the update, if the run asks
    nodes: int = 1  # replies the coordinator will add this round (bounds what one may send)
    network: Layout | None = None  # cells of the network forecast (common/network.py)
    network_min_sites: int = 3
    # the cross-site profile (common/denoise.py)
    denoise: DenoiseSettings = field(default_factory=DenoiseSettings)
    denoise_id: str = ""  # digest of the run's summed moments, announced by the coordinator

    @property
    def round_seed(self) -> int:
        return self.seed * 1009 + self.server_round


def round_settings(cfg: Mapping) -> RoundSettings:
    """Settings from the coordinator's config record; a wrong type is refused by name."""
    denoise = denoise_settings(cfg)
    model = ModelConfig(
        lookback=node_setting(cfg, "lookback", 28),
        horizon=node_setting(cfg, "horizon", 14),
        hidden=node_setting(cfg, "hidden", 32),
        heads=node_setting(cfg, "heads", 4),
        quantiles=tuple(cfg.get("quantiles", DEFAULT_QUANTILES)),
        anchor=node_setting(cfg, "anchor", "none"),
        denoise=denoise.enabled,
    )
    server_round, rounds = node_setting(cfg, "server-round", 0), node_setting(cfg, "num-rounds", 0)
    progress = ((server_round - 1) / rounds, server_round / rounds) if rounds and server_round else (0, 1)
    train = TrainConfig(
        epochs=node_setting(cfg, "local-epochs", 2),
        learning_rate=node_setting(cfg, "learning-rate", 3e-3),
        max_batches_per_epoch=node_setting(cfg, "max-batches", 60),
        batch_size=node_setting(cfg, "batch-size", 256),
        scale_weight=node_setting(cfg, "scale-weight", 0.0),
        progress=progress,
    )
    held_out = node_setting(cfg, "validation-periods", -1)
    validation = held_out if held_out >= 0 else None
    check_node_settings(cfg)
    privacy = privacy_from_config(dict(cfg))
    seed, nodes = node_setting(cfg, "seed", 7), node_setting(cfg, "round-nodes", 1)
    group_by, groups = node_setting(cfg, "network-group", ""), node_setting(cfg, "network-groups", "")
    network = Layout.of(group_by, groups, model.horizon)
    min_sites = node_setting(cfg, "network-min-sites", 3)
    return RoundSettings(
        model,
        train,
        seed,
        server_round,
        validation,
        privacy,
        nodes,
        network,
        min_sites,
        denoise,
        node_setting(cfg, "denoise-id", ""),
    )


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
    profile.save(cfg.private_dir / PROFILE_FILE)
    return profile


def check_profile(cfg: NodeConfig, profile_id: str) -> None:
    """Training with another run's shapes would silently change the inputs: refuse it."""
    held = Profile.load(cfg.private_dir / PROFILE_FILE).profile_id
    if profile_id and held != profile_id:
        raise DenoiseError(f"this node's cross-site profile is {held}, the run announces {profile_id}")


def update_values(weights: np.ndarray, n: float, loss: float) -> np.ndarray:
    """What a node encrypts: [n·w, n·loss, n] (layout in common/records.py)."""
    return np.append(n * weights, [n * loss, n])


def global_weights(summed: np.ndarray) -> np.ndarray:
    """w = Σn·w / Σn from the decrypted sum of every node's ``update_values``."""
    total = summed[-1]
    if not np.isfinite(total) or total < 0.5 / WEIGHT_UNIT:
        raise crypto.CryptoError(f"global state decrypts to a weight total of {total:g}: corrupt")
    return summed[: -len(STATE_TAIL)] / total


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
        return global_weights(crypto.decrypt(self.key, state))

    def data(self, s: RoundSettings) -> NodeData:
        if s.model.denoise:
            check_profile(self.cfg, s.denoise_id)
        return NodeData.load(self.cfg, s.model.horizon, s.validation, s.model.denoise)

    # ---- the cross-site profile, before round 1 (common/denoise.py) ----------------------------
    def profile_site_groups(self, s: RoundSettings) -> tuple[crypto.EncryptedVector, str]:
        history, end = site_history(self.cfg, s)
        held = np.append(history.site_groups(len(s.denoise.groups)), 1.0)  # + the sites cell
        return crypto.encrypt(self.key, held, METRIC_SCALE_BITS, addends=s.nodes), end

    def profile_moments(
        self, s: RoundSettings, site_counts: crypto.EncryptedVector
    ) -> tuple[crypto.EncryptedVector, str]:
        counts = crypto.decrypt(self.key, site_counts)
        check_sites(s, counts[-1])
        history, end = site_history(self.cfg, s)
        values = history.moments(s.denoise, counts[:-1])
        return crypto.encrypt(self.key, values, PROFILE_SCALE_BITS, addends=s.nodes), end

    def adopt_profile(self, s: RoundSettings, summed: crypto.EncryptedVector, profile_id: str) -> Profile:
        return adopt_profile(self.cfg, s, crypto.decrypt(self.key, summed), profile_id)

    def train(
        self,
        s: RoundSettings,
        weights: np.ndarray | None,
        on_epoch: Callable[[int, int, float], None] | None = None,
    ) -> crypto.EncryptedVector:
        new, windows, loss = local_update(self.data(s), s.model, s.train, weights, s.round_seed, on_epoch)
        if not np.all(np.isfinite(new)) or not np.isfinite(loss):
            raise ValueError("local training produced NaN or infinite weights: update not sent")
        n = windows / WEIGHT_UNIT
        if s.privacy is not None:  # clipped, noised, and weighted 1 like every other node
            start = weights if weights is not None else model_vector(build_model(s.model, s.round_seed))
            new, _ = privatize(start, new, s.privacy)
            n = 1.0
        return crypto.encrypt(self.key, update_values(new, n, loss), addends=s.nodes)

    def evaluate(self, s: RoundSettings, weights: np.ndarray) -> crypto.EncryptedVector:
        """Keep the decrypted global model (private) and return encrypted hold-out error sums."""
        save_global_model(self.cfg, weights, s.model, s.server_round)
        sums = holdout_metrics(self.data(s), s.model, weights, self.cfg.data.season)
        values = [
            sums[k] for k in ("abs_err_model", "abs_err_naive", "pinball_scaled", "covered_80", "points")
        ]
        return crypto.encrypt(self.key, np.array([*values, 1.0]), METRIC_SCALE_BITS, addends=s.nodes)

    def network_totals(
        self, s: RoundSettings, weights: np.ndarray
    ) -> tuple[crypto.EncryptedVector, list, int]:
        """Forecast with the final global model; encrypt this site's totals per group and period.

        Keeps the forecast and the totals it sent in NODE/out; returns (ciphertext, period dates,
        series forecast)."""
        if s.network is None:
            raise NetworkError("no network layout in the run config")
        if self.cfg.extra.get("network", {}).get("share", True) is not True:
            raise NetworkError("this site does not share network totals (node.toml [network] share = false)")
        minimum = max(s.network_min_sites, MIN_SITES)  # a run config cannot lower the site's own floor
        if s.nodes < minimum:
            raise NetworkError(
                f"the coordinator would sum {s.nodes} sites, fewer than the minimum of "
                f"{minimum}: this site keeps its totals"
            )
        save_global_model(self.cfg, weights, s.model, s.server_round)
        frame = forecast(self.cfg)
        dates = sorted(pd.to_datetime(frame["date"].unique()))
        values, table = site_cells(frame, s.network, dates)
        self.cfg.out_dir.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(self.cfg.out_dir / "forecasts.parquet", index=False)
        table.to_parquet(self.cfg.out_dir / NETWORK_TOTALS_FILE, index=False)
        digits = to_digits(values)
        vec = crypto.encrypt(self.key, digits, DIGIT_SCALE_BITS, addends=s.nodes)
        return vec, dates, int(frame["sku"].nunique())
