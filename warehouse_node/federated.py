"""One node's part of a federated round, between its data and the ciphertexts (no Flower here).

The node replies with Enc([n·w, n·loss, n]), n its FedAvg weight; the coordinator only adds. From
the summed state Enc([Σn·w, Σn·loss, Σn]) each node recovers the global weights w = Σn·w / Σn.
A server learning rate η (FedOpt's server step, which a coordinator that cannot read the model
cannot take) is applied by every node to its own update before encrypting: it sends
w = w_global + η·(w_trained − w_global), so the average is w_global + η·(mean update).
Each node keeps its own AdamW state between rounds (NODE/private) instead of restarting the
optimizer every round; on store_item that lowered the federated MAE at both origins tried before
the benchmark window, and on Walmart it changed nothing (BENCHMARKS.md notes).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

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
    EVAL_METRICS,
    METRIC_SCALE_BITS,
    MIN_PUBLISHED_SITES,
    STATE_TAIL,
    WEIGHT_UNIT,
    check_node_settings,
    denoise_settings,
    eval_sums,
    node_setting,
    server_optimizer,
    stop_rule,
)
from common.server_optimizer import ServerOptimizer
from common.stopping import Decision, StopRule, decide, validation_score
from common.training import TrainConfig
from warehouse_node import journal, published
from warehouse_node.pipeline import (
    CANDIDATE_FILE,
    MODEL_FILE,
    NodeData,
    forecast,
    group_labels,
    holdout_metrics,
    keep_candidate,
    local_update,
    save_global_model,
)
from warehouse_node.server_state import state_after

NETWORK_TOTALS_FILE = "network_totals.parquet"  # NODE/out: what this site put into the network sum
OPTIMIZER_FILE = "optimizer.pt"  # NODE/private: this node's optimizer state after its last round


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
    optimizer: ServerOptimizer = field(default_factory=ServerOptimizer)  # the server step (module docstring)
    stop: StopRule = field(default_factory=lambda: StopRule(3))  # when the run is done
    run_token: str = ""  # the coordinator's name for this run: keys the replicated server state
    global_round: int = 0  # the aggregate round the message's global state comes from
    publish_min_sites: int = MIN_PUBLISHED_SITES  # the fewest sites of a round-metrics sum a site opens

    @property
    def round_seed(self) -> int:
        return self.seed * 1009 + self.server_round

    @property
    def server_learning_rate(self) -> float:
        return self.optimizer.learning_rate


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
        season_blend=node_setting(cfg, "season-blend", 0.0),
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
        proximal=node_setting(cfg, "proximal-mu", 0.0),
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
        server_optimizer(cfg),
        stop_rule(cfg),
        str(cfg.get("run-token", "")),
        int(cfg.get("global-round", max(server_round - 1, 0))),
        node_setting(cfg, "publish-min-sites", MIN_PUBLISHED_SITES),
    )


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
    t = s.train
    run = (s.model.to_dict(), s.seed, t.epochs, t.learning_rate, t.batch_size, t.max_batches_per_epoch)
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
        raise ValueError("local training produced NaN or infinite weights: update not sent")
    cfg.private_dir.mkdir(parents=True, exist_ok=True)
    saved = {"run": _run_tag(s), "round": s.server_round, "state": state}
    torch.save(saved, cfg.private_dir / OPTIMIZER_FILE)
    start = round_start(s, weights)
    if s.optimizer.stateful:  # the step is taken after decryption, by every node (global_model)
        return start, new, windows, loss
    return start, server_step(start, new, s.server_learning_rate), windows, loss


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

    def global_model(self, s: RoundSettings, aggregates: dict[int, crypto.EncryptedVector]) -> np.ndarray:
        """The global model after aggregate round ``s.global_round``: the average itself (fedavg),
        else the server step every node takes from it (warehouse_node/server_state.py);
        ``aggregates`` holds that round's and any earlier ones this site missed."""
        if not s.optimizer.stateful:
            return self.recover_weights(aggregates[s.global_round])
        fetch = {r: (lambda v=v: self.recover_weights(v)) for r, v in aggregates.items()}
        return state_after(
            self.cfg, s.run_token, s.optimizer, s.global_round, lambda: initial_model(s), fetch
        ).model

    def decide(self, s: RoundSettings, summed_scores: list[crypto.EncryptedVector]) -> Decision:
        """Apply the run's stopping rule to the summed hold-out sums of every round so far and keep
        the best round's model; every node reaches the same decision from the same sums."""
        sums = [eval_sums(crypto.decrypt(self.key, v)) for v in summed_scores]
        if any(round(x["nodes"]) < 1 for x in sums):
            raise crypto.CryptoError("a summed score holds no site: refused")
        decision = decide([validation_score(x, s.stop.metric) for x in sums], s.stop)
        keep_candidate(self.cfg, decision.best_round)
        return decision

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
    ) -> tuple[crypto.EncryptedVector, np.ndarray]:
        """This site's encrypted update, and the global model it trained from."""
        start, new, windows, loss = round_update(self.cfg, self.data(s), s, weights, on_epoch)
        n = windows / WEIGHT_UNIT
        if s.privacy is not None:  # clipped, noised, and weighted 1 like every other node
            new, _ = privatize(start, new, s.privacy)  # clips η·update: the bound holds
            n = 1.0
        published.remember_training(self.cfg, s.run_token, s.server_round, n, loss)
        return crypto.encrypt(self.key, update_values(new, n, loss), addends=s.nodes), start

    def evaluate(
        self, s: RoundSettings, weights: np.ndarray, run: int | None = None
    ) -> crypto.EncryptedVector:
        """Keep the decrypted global model and this site's scores of it (private); return the
        encrypted hold-out error sums. With a held-out window the model is a candidate until the
        federation's summed scores rank it (``decide``)."""
        name = MODEL_FILE if s.validation == 0 else CANDIDATE_FILE
        save_global_model(self.cfg, weights, s.model, s.server_round, name)
        sums = holdout_metrics(self.data(s), s.model, weights, self.cfg.data.season)
        journal.record_holdout(self.cfg, run, s.server_round, journal.model_fingerprint(weights), sums)
        trained = published.training_sums(self.cfg, s.run_token, s.server_round)
        values = [*(sums[k] for k in EVAL_METRICS[:5]), *trained, 1.0]
        return crypto.encrypt(self.key, np.array(values), METRIC_SCALE_BITS, addends=s.nodes)

    def open_published(
        self, s: RoundSettings, kind: str, vec: crypto.EncryptedVector
    ) -> tuple[list[float], int]:
        """Decrypt a sum the planner may see, after the checks of warehouse_node/published.py."""
        minimum = s.network_min_sites if kind == published.NETWORK_TOTALS else s.publish_min_sites
        network = s.network if self.cfg.share_network else None
        values, sites = published.open_sum(self.key, kind, vec, minimum, network)
        digest = hashlib.sha256(vec.to_bytes()).hexdigest()[:32]
        published.check_first_opening(self.cfg, s.run_token, kind, s.server_round, digest)
        return values, sites

    def network_totals(
        self, s: RoundSettings, weights: np.ndarray
    ) -> tuple[crypto.EncryptedVector, list, int]:
        """Forecast with the final global model; encrypt this site's totals per group and period.

        Keeps the forecast and the totals it sent in NODE/out; returns (ciphertext, period dates,
        series forecast)."""
        if s.network is None:
            raise NetworkError("no network layout in the run config")
        if not self.cfg.share_network:
            raise NetworkError("this site does not share network totals (node.toml [network] share = false)")
        minimum = max(s.network_min_sites, MIN_SITES)  # a run config cannot lower the site's own floor
        if s.nodes < minimum:
            raise NetworkError(
                f"the coordinator would sum {s.nodes} sites, fewer than the minimum of "
                f"{minimum}: this site keeps its totals"
            )
        save_global_model(self.cfg, weights, s.model, s.global_round)
        frame = forecast(self.cfg)
        dates = sorted(pd.to_datetime(frame["date"].unique()))
        values, table = site_cells(frame, s.network, dates)
        self.cfg.out_dir.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(self.cfg.out_dir / "forecasts.parquet", index=False)
        table.to_parquet(self.cfg.out_dir / NETWORK_TOTALS_FILE, index=False)
        digits = to_digits(values)
        vec = crypto.encrypt(self.key, digits, DIGIT_SCALE_BITS, addends=s.nodes)
        return vec, dates, int(frame["sku"].nunique())
