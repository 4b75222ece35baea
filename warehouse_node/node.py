"""One warehouse in a federated run: its data, a round's training, its scores of a model, its forecast.

Plain arrays in and out: the ClientApp (warehouse_node/client_app.py) decrypts what a message
carries and encrypts what the node replies, at its edge (common/codec.py); the simulation's
reference modes (coordinator/planner/reference_modes.py) call the same methods without any key.
Keeping the global model is an explicit step (``keep_global_model``): scoring a model and
forecasting with it each say which model they use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.codec import EVAL_METRICS, WEIGHT_UNIT
from common.config import NodeConfig
from common.denoise import Profile
from common.network import MIN_SITES, NetworkError, site_cells
from common.privacy import privatize
from common.settings import ModelConfig
from common.stopping import Decision, decide, validation_score
from warehouse_node import journal, published
from warehouse_node.backtest import holdout_forecast
from warehouse_node.fallback import MODEL, forecast_or_fallback, with_source
from warehouse_node.federated import (
    RoundSettings,
    adopt_profile,
    check_profile,
    check_sites,
    initial_model,
    round_update,
    site_history,
)
from warehouse_node.model_store import CANDIDATE_FILE, MODEL_FILE, keep_candidate, save_global_model
from warehouse_node.pipeline import NodeData, forecast, holdout_metrics, prepare_node
from warehouse_node.server_state import state_after

NETWORK_TOTALS_FILE = "network_totals.parquet"  # NODE/out: what this site put into the network sum
EpochReport = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Update:
    """A round's training: the weights to average, their FedAvg weight and training loss, and
    the global model the round started from."""

    weights: np.ndarray
    weight: float  # training windows / WEIGHT_UNIT (1 for every node under differential privacy)
    loss: float
    start: np.ndarray


@dataclass(frozen=True)
class Node:
    cfg: NodeConfig

    def data(self, s: RoundSettings) -> NodeData:
        if s.model.denoise:
            check_profile(self.cfg, s.denoise_id)
        return NodeData.load(self.cfg, s.model.horizon, s.validation, s.model.denoise)

    def global_model(self, s: RoundSettings, aggregates: dict[int, Callable[[], np.ndarray]]) -> np.ndarray:
        """The global model after aggregate round ``s.global_round``: the average itself (fedavg),
        else the server step every node takes from it (warehouse_node/server_state.py);
        ``aggregates`` fetch that round's average and any earlier ones this site missed."""
        if not s.optimizer.stateful:
            return aggregates[s.global_round]()
        return state_after(
            self.cfg, s.run_token, s.optimizer, s.global_round, lambda: initial_model(s), aggregates
        ).model

    def train(
        self, s: RoundSettings, weights: np.ndarray | None, on_epoch: EpochReport | None = None
    ) -> Update:
        """One round of local training from the global model (None: round 1's seeded model)."""
        start, new, windows, loss = round_update(self.cfg, self.data(s), s, weights, on_epoch)
        weight = windows / WEIGHT_UNIT
        if s.privacy is not None:  # clipped, noised, and weighted 1 like every other node
            new, _ = privatize(start, new, s.privacy)  # clips η·update: the bound holds
            weight = 1.0
        published.remember_training(self.cfg, s.run_token, s.server_round, weight, loss)
        return Update(new, weight, loss, start)

    def keep_global_model(self, s: RoundSettings, weights: np.ndarray, key_fingerprint: str) -> None:
        """Keep the round's decrypted global model (NODE/private). With a held-out window it is a
        candidate until the federation's summed scores rank it (``decide``); else the model."""
        name = MODEL_FILE if s.validation == 0 else CANDIDATE_FILE
        save_global_model(self.cfg, weights, s.model, s.server_round, name, key_fingerprint)

    def keep_final_model(
        self, model: ModelConfig, weights: np.ndarray, model_round: int, key_fingerprint: str = ""
    ) -> None:
        """Forecast from now on with ``weights``, the global model of ``model_round``."""
        save_global_model(self.cfg, weights, model, model_round, MODEL_FILE, key_fingerprint)

    def prepare(self) -> dict[str, int]:
        """De-identify and check the raw data (NODE/private); the quarantined rows by reason."""
        return prepare_node(self.cfg)

    def forecast(self, include_ended: bool = False) -> pd.DataFrame:
        """The next horizon of every series, in the site's own keys: with the kept global model,
        or with the robust baseline when that model cannot be trusted (warehouse_node/fallback.py);
        every row says which (``source``) and why (``source_reason``)."""
        return forecast_or_fallback(self.cfg, include_ended)

    def score(self, s: RoundSettings, weights: np.ndarray, run: int | None = None) -> dict[str, float]:
        """This site's hold-out sums of a model, and its own training of the round (``EVAL_METRICS``)."""
        sums = holdout_metrics(self.data(s), s.model, weights, self.cfg.data.season)
        journal.record_holdout(self.cfg, run, s.server_round, journal.model_fingerprint(weights), sums)
        trained = published.training_sums(self.cfg, s.run_token, s.server_round)
        return dict(zip(EVAL_METRICS[:-1], [*(sums[k] for k in EVAL_METRICS[:5]), *trained], strict=True))

    def decide(self, s: RoundSettings, summed: list[dict[str, float]]) -> Decision:
        """Apply the run's stopping rule to the summed hold-out sums of every round so far and keep
        the best round's model; every node reaches the same decision from the same sums."""
        decision = decide([validation_score(x, s.stop.metric) for x in summed], s.stop)
        keep_candidate(self.cfg, decision.best_round)
        return decision

    def network_cells(
        self, s: RoundSettings, weights: np.ndarray, key_fingerprint: str = ""
    ) -> tuple[np.ndarray, list, int]:
        """Forecast with the final global model; this site's totals per group and period (kept in
        NODE/out with the forecast). Returns (cells, period dates, series forecast)."""
        if not self.cfg.share_network:
            raise NetworkError("this site does not share network totals (node.toml [network] share = false)")
        minimum = max(s.network_min_sites, MIN_SITES)  # a run config cannot lower the site's own floor
        if s.nodes < minimum:
            raise NetworkError(
                f"the coordinator would sum {s.nodes} sites, fewer than the minimum of "
                f"{minimum}: this site keeps its totals"
            )
        self.keep_final_model(s.model, weights, s.global_round, key_fingerprint)
        frame = with_source(forecast(self.cfg), MODEL, "")  # the network's: the federation's model
        dates = sorted(pd.to_datetime(frame["date"].unique()))
        # the hold-out window's errors calibrate the network interval; a run without one has none
        holdout = holdout_forecast(self.cfg, self.data(s).cutoff) if s.validation != 0 else None
        values, table = site_cells(frame, s.network, dates, holdout)
        self.cfg.out_dir.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(self.cfg.out_dir / "forecasts.parquet", index=False)
        table.to_parquet(self.cfg.out_dir / NETWORK_TOTALS_FILE, index=False)
        return values, dates, int(frame["sku"].nunique())

    # ---- the cross-site profile, before round 1 (common/denoise.py) ----------------------------
    def profile_site_groups(self, s: RoundSettings) -> tuple[np.ndarray, str]:
        """1 for each shared group this site holds, and 1 for the site itself; the grid's end."""
        history, end = site_history(self.cfg, s)
        return np.append(history.site_groups(len(s.denoise.groups)), 1.0), end

    def profile_moments(self, s: RoundSettings, counts: np.ndarray) -> tuple[np.ndarray, str]:
        """This site's second moments of the groups enough sites hold (``counts``: summed groups)."""
        check_sites(s, counts[-1])
        history, end = site_history(self.cfg, s)
        return history.moments(s.denoise, counts[:-1]), end

    def adopt_profile(self, s: RoundSettings, summed: np.ndarray, profile_id: str) -> Profile:
        return adopt_profile(self.cfg, s, summed, profile_id)
