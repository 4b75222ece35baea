"""The wire format: every vector that travels, its layout, scale and encoding (one home for both apps).

The node's learning code works on plain arrays; the ClientApp encodes and encrypts them here, at
its edge, and decrypts and decodes what it receives; the ServerApp only sums (coordinator/
aggregation.py), at the scale each kind of vector travels at (``SCALE_BITS``):

* ``state``: a node's update [n·w, n·loss, n]; summed, it is the global state (``global_weights``);
* ``metrics``: a node's hold-out sums (``EVAL_METRICS``); ``scores-NNNN``: a round's summed ones;
* ``network``: a node's network-forecast totals as digits (common/network.py);
* ``site_groups`` and ``moments``: the cross-site profile's counts and moments (common/denoise.py).

An EncryptedVector's bytes go into an ``Array(dtype="bytes", stype=CIPHERTEXT_STYPE)``; Flower
ships such arrays in chunks, so large models need no size tuning. No plaintext derived from node
data is ever put into a message: weights, sample counts and metrics are all inside ciphertexts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

from common import crypto
from common.crypto import CryptoError, EncryptedVector
from common.denoise import PROFILE_SCALE_BITS
from common.evaluation import HOLDOUT_SUMS
from common.network import DIGIT_SCALE_BITS, Layout, from_digits, to_digits

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
    *HOLDOUT_SUMS,
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


SCALE_BITS: dict[str, int | None] = {  # None: the key's own scale
    STATE: None,
    METRICS: METRIC_SCALE_BITS,
    NETWORK: DIGIT_SCALE_BITS,
    SITE_GROUPS: METRIC_SCALE_BITS,
    MOMENTS: PROFILE_SCALE_BITS,
}


def encode(key: crypto.KeyContext, name: str, values: np.ndarray, addends: int) -> EncryptedVector:
    """``values`` of kind ``name`` encrypted at its scale, refused when a sum of ``addends`` such
    vectors could leave the range CKKS sums exactly (common/crypto.py)."""
    return crypto.encrypt(key, np.asarray(values, dtype=np.float64), SCALE_BITS[name], addends=addends)


def encode_update(
    key: crypto.KeyContext, weights: np.ndarray, weight: float, loss: float, addends: int
) -> EncryptedVector:
    """A node's update: [weight·w, weight·loss, weight] (weight: its windows / WEIGHT_UNIT)."""
    return encode(key, STATE, np.append(weight * weights, [weight * loss, weight]), addends)


def global_weights(summed: np.ndarray) -> np.ndarray:
    """w = Σn·w / Σn from a decrypted sum of updates."""
    total = summed[-1]
    if not np.isfinite(total) or total < 0.5 / WEIGHT_UNIT:
        raise CryptoError(f"global state decrypts to a weight total of {total:g}: corrupt")
    return summed[: -len(STATE_TAIL)] / total


def decode_global(key: crypto.KeyContext, state: EncryptedVector) -> np.ndarray:
    return global_weights(crypto.decrypt(key, state))


def encode_scores(key: crypto.KeyContext, sums: Mapping[str, float], addends: int) -> EncryptedVector:
    """A node's hold-out sums of the round (``EVAL_METRICS`` but the last; the site count is 1)."""
    return encode(key, METRICS, np.array([*(float(sums[k]) for k in EVAL_METRICS[:-1]), 1.0]), addends)


def decode_scores(key: crypto.KeyContext, vec: EncryptedVector) -> dict[str, float]:
    """A round's summed hold-out sums by name; one that counts no site is refused."""
    sums = eval_sums(crypto.decrypt(key, vec))
    if round(sums["nodes"]) < 1:
        raise CryptoError("a summed score holds no site: refused")
    return sums


def encode_totals(key: crypto.KeyContext, values: np.ndarray, addends: int) -> EncryptedVector:
    """A node's network-forecast cells, as exact digits (common/network.py)."""
    return encode(key, NETWORK, to_digits(values), addends)


def decode_totals(plain: np.ndarray, layout: Layout) -> np.ndarray:
    return from_digits(plain, layout.cells)
