"""How encrypted vectors travel in Flower messages (shared by the ClientApp and the ServerApp).

An EncryptedVector's bytes go into an ``Array(dtype="bytes", stype=CIPHERTEXT_STYPE)``; Flower
ships such arrays in chunks, so large models need no size tuning. No plaintext derived from node
data is ever put into a message: weights, sample counts and metrics are all inside ciphertexts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import Array, ArrayRecord

from common.crypto import CryptoError, EncryptedVector
from common.denoise import DenoiseSettings
from common.network import Layout
from common.server_optimizer import ServerOptimizer
from common.stopping import StopRule

CIPHERTEXT_STYPE = "fedstock.ckks"
STATE, METRICS, NETWORK = "state", "metrics", "network"  # keys inside the ArrayRecord
SCORES = "scores"  # the summed hold-out sums of every round so far: SCORES-0001, SCORES-0002, ...
SITE_GROUPS, MOMENTS = "site_groups", "moments"  # the cross-site profile (common/denoise.py)
GLOBAL, UPDATE, CONFIG = "global", "update", "config"  # keys inside the RecordDict

# A train reply is ONE vector, [weight·w (the model), weight·train pinball, weight]: packing the two
# metric values into the model's last ciphertext saves a whole ciphertext (2048 slots) per reply.
# weight = training windows / WEIGHT_UNIT (1 for every node under differential privacy); the unit
# keeps Σ weight·w far inside the CKKS sum bound (crypto.sum_bound) while the sum stays precise.
STATE_TAIL = ("weight_x_train_pinball", "weight")
WEIGHT_UNIT = 1024
# Evaluation sums (absolute errors in units, point counts) are large: they travel at a lower scale.
# A site adds its own training loss of the round (weight·loss, weight) to them, so that the round's
# one small sum holds every number the planner is shown; the last cell counts the sites in it.
EVAL_METRICS = (
    "abs_err_model",
    "abs_err_naive",
    "pinball_scaled",
    "covered_80",
    "points",
    "weight_x_train_pinball",
    "train_weight",
    "nodes",
)
METRIC_SCALE_BITS = 16
# The sums the sites decrypt for the coordinator and the planner (coordinator/publish.py): the
# round's evaluation sums, and the network forecast's totals. Nothing else is ever opened.
ROUND_METRICS, NETWORK_TOTALS = "round-metrics", "network-totals"
PUBLISHED_KINDS = (ROUND_METRICS, NETWORK_TOTALS)
LEGACY_EVAL_LENGTH = 6  # runs made before the training cells: the five sums and the count


def eval_sums(values: Sequence[float]) -> dict[str, float]:
    """Decrypted evaluation sums by name; a run made before the training cells reads with them 0."""
    if len(values) == LEGACY_EVAL_LENGTH:
        values = [*values[:5], 0.0, 0.0, values[5]]
    if len(values) != len(EVAL_METRICS):
        raise CryptoError(f"a summed score has {len(values)} values, expected {len(EVAL_METRICS)}")
    return dict(zip(EVAL_METRICS, (float(v) for v in values), strict=True))


MIN_PUBLISHED_SITES = 2  # a site never opens a sum of fewer sites: one site's own numbers
# What the sites reply for a round-metrics sum: ratios of the sums and the count of sites, never the
# raw sums (points and training weights are fixed per site: two rounds with different sites would
# give one site's counts by subtraction).
PUBLISHED_METRICS = ("train_pinball", "holdout_mae", "naive_mae", "holdout_pinball", "coverage_80", "nodes")


def to_array(vec: EncryptedVector) -> Array:
    blob = vec.to_bytes()
    return Array(dtype="bytes", shape=(len(blob),), stype=CIPHERTEXT_STYPE, data=blob)


def from_array(array: Array) -> EncryptedVector:
    if array.stype != CIPHERTEXT_STYPE:
        raise CryptoError(f"expected a {CIPHERTEXT_STYPE} array, got stype {array.stype!r}")
    return EncryptedVector.from_bytes(array.data)


def encrypted_record(**vectors: EncryptedVector) -> ArrayRecord:
    return ArrayRecord({name: to_array(vec) for name, vec in vectors.items()})


def read_encrypted(record: ArrayRecord, name: str) -> EncryptedVector:
    if name not in record:
        raise CryptoError(f"message carries no encrypted {name!r}")
    return from_array(record[name])


# Federation-wide settings the coordinator forwards to every node, with their types. Everything else
# in the run config stays with the coordinator.
NODE_SETTINGS: dict[str, type] = {
    "num-rounds": int,
    "local-epochs": int,
    "batch-size": int,
    "scale-weight": float,
    "validation-periods": int,
    "lookback": int,
    "horizon": int,
    "hidden": int,
    "anchor": str,
    "season-blend": float,  # share of two seasons earlier in the seasonal-lag input (common/windows.py)
    "heads": int,
    "max-batches": int,
    "learning-rate": float,
    "proximal-mu": float,  # FedProx μ of the sites' local steps (common/training.py); 0 = off
    "server-learning-rate": float,  # η of the server step, taken by the nodes (warehouse_node/federated.py)
    "server-optimizer": str,  # fedavg | fedavgm | fedadam | fedyogi (common/server_optimizer.py)
    "server-momentum": float,  # β₁ of the server step
    "server-beta2": float,
    "server-tau": float,
    "stop-patience": int,  # rounds without a better summed validation score before stopping (0: never)
    "stop-min-improvement": float,  # relative: smaller gains do not count (common/stopping.py)
    "stop-metric": str,  # mae | pinball: what the summed hold-out scores are judged by
    "seed": int,
    "dp-clip": float,  # differential privacy (common/privacy.py); 0 = off
    "dp-noise": float,
    "dp-nodes": int,
    "dp-delta": float,
    "network-group": str,  # network forecast (common/network.py): "" = total only, else a series key
    "network-groups": str,  # its values, comma-separated: the same cells at every site
    "network-min-sites": int,  # a node refuses to send its totals into a smaller sum
    "publish-min-sites": int,  # a node opens no round-metrics sum of fewer sites (floor 2)
    "publish-kind": str,  # set by the coordinator: which kind of sum it asks the sites to open
    "denoise-rank": int,  # cross-site profile (common/denoise.py): shapes per group, 0 = off
    "denoise-shrink": float,
    "denoise-periods": int,
    "denoise-min-sites": int,  # a group is shared only when this many sites hold it (floor 3)
    "denoise-id": str,  # set by the coordinator: which summed profile the run trains with
}


MAX_SERVER_LEARNING_RATE = 10.0  # far past where an averaged update overshoots


def node_setting(cfg: Mapping, key: str, default: object) -> Any:
    """One forwarded setting, converted to its type; a wrong type is refused by name."""
    kind, value = NODE_SETTINGS.get(key, int), cfg.get(key, default)
    whole = not isinstance(value, float) or value.is_integer()
    if not isinstance(value, bool) and (kind is not int or whole):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"run config {key!r} must be {kind.__name__}, got {value!r}")


def check_node_settings(cfg: Mapping) -> None:
    for key in NODE_SETTINGS:
        if key in cfg:
            node_setting(cfg, key, None)
    if not node_setting(cfg, "proximal-mu", 0.0) >= 0:  # NaN too
        raise ValueError(f"run config 'proximal-mu' must be 0 or more, got {cfg['proximal-mu']!r}")


def server_learning_rate(cfg: Mapping) -> float:
    """η of the server step (warehouse_node/federated.py), refused outside (0, MAX_SERVER_LEARNING_RATE]."""
    rate = node_setting(cfg, "server-learning-rate", 1.0)
    if not 0 < rate <= MAX_SERVER_LEARNING_RATE:
        top = f"{MAX_SERVER_LEARNING_RATE:g}"
        raise ValueError(f"run config 'server-learning-rate' must be in (0, {top}], got {rate!r}")
    return rate


def server_optimizer(cfg: Mapping) -> ServerOptimizer:
    """The server step every node takes (common/server_optimizer.py); a bad value is refused by name."""
    rate = server_learning_rate(cfg)
    try:
        return ServerOptimizer(
            node_setting(cfg, "server-optimizer", "fedavg"),
            rate,
            node_setting(cfg, "server-momentum", 0.9),
            node_setting(cfg, "server-beta2", 0.99),
            node_setting(cfg, "server-tau", 1e-3),
        )
    except ValueError as exc:
        raise ValueError(f"run config: {exc}") from None


def stop_rule(cfg: Mapping) -> StopRule:
    """When the run stops (common/stopping.py): ``num-rounds`` is the cap."""
    try:
        return StopRule(
            node_setting(cfg, "num-rounds", 3),
            node_setting(cfg, "stop-patience", 0),
            node_setting(cfg, "stop-min-improvement", 0.0),
            node_setting(cfg, "stop-metric", "mae"),
        )
    except ValueError as exc:
        raise ValueError(f"run config: {exc}") from None


def denoise_settings(cfg: Mapping) -> DenoiseSettings:
    """The cross-site profile's settings; its groups are the network forecast's (network-groups)."""
    group_by = node_setting(cfg, "network-group", "")
    groups = Layout.of(group_by, node_setting(cfg, "network-groups", ""), 1).groups[1:-1]
    return DenoiseSettings(
        rank=node_setting(cfg, "denoise-rank", 0),
        shrink=node_setting(cfg, "denoise-shrink", 0.5),
        periods=node_setting(cfg, "denoise-periods", 104),
        min_sites=node_setting(cfg, "denoise-min-sites", 5),
        group_by=group_by,
        groups=groups,
    )
