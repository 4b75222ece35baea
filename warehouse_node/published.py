"""The sums a site opens for the planner, and the checks it makes before it opens one.

The planner holds no secret key. What it is shown (each round's training and hold-out metrics,
the network forecast) are sums over sites; the coordinator sends such a sum back to the sites,
each site decrypts it and replies with the plaintext, and the coordinator keeps it when the sites
agree (coordinator/publish.py). A site opens only a published kind of sum (common/codec.py
``PUBLISHED_KINDS``), of that kind's length, counting at least the minimum of sites inside the
ciphertext, and one sum of each kind per round (never a second, different one); never a model,
never a single site's vector. For the round metrics it replies with ratios, never the raw sums. A
coordinator that forges a "sum" from one site's ciphertext and an encrypted count could still pass
these checks: THREAT_MODEL.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common import crypto
from common.codec import EVAL_METRICS, NETWORK_TOTALS, PUBLISHED_KINDS, ROUND_METRICS, decode_totals
from common.config import NodeConfig
from common.evaluation import holdout_means
from common.files import owner_only, write_json_atomic
from common.network import MIN_SITES, Layout
from common.settings import MIN_PUBLISHED_SITES

TRAINED_FILE = "trained.json"  # NODE/private: this site's training loss of its latest round
OPENED_FILE = "opened.json"  # NODE/private: which sum this site opened, per run, kind and round
KEEP_OPENED = 2000


class RefusedToOpen(crypto.CryptoError):
    """A sum this site will not decrypt for the coordinator."""


def remember_training(cfg: NodeConfig, run_token: str, server_round: int, weight: float, loss: float) -> None:
    """Keep this round's training loss until the round's evaluation adds it to the summed metrics."""
    entry = {"run": run_token, "round": server_round, "weight": weight, "loss": loss}
    with owner_only(cfg.private_dir) as private:
        write_json_atomic(private / TRAINED_FILE, entry)


def training_sums(cfg: NodeConfig, run_token: str, server_round: int) -> tuple[float, float]:
    """(weight·loss, weight) of this site's training in ``server_round`` of the run; (0, 0) when it
    did not train in it (it joined later, or its update was not sent)."""
    path = cfg.private_dir / TRAINED_FILE
    try:
        entry = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return 0.0, 0.0
    if entry.get("run") != run_token or entry.get("round") != server_round:
        return 0.0, 0.0
    weight, loss = float(entry["weight"]), float(entry["loss"])
    return (weight * loss, weight) if np.isfinite(loss) else (0.0, 0.0)


def open_sum(
    key: crypto.KeyContext,
    kind: str,
    vec: crypto.EncryptedVector,
    min_sites: int,
    network: Layout | None = None,
) -> tuple[list[float], int]:
    """Decrypt a published kind of sum after checking it; return (what the site replies, the sites
    it counts).

    ``round-metrics``: the round's evaluation sums (``EVAL_METRICS``) of at least ``min_sites``
    (floor 2) sites; the reply is their ratios (``PUBLISHED_METRICS``). ``network-totals``: the
    network forecast's digits of at least ``min_sites`` (floor 3) sites, decoded to totals; only
    when ``network`` (this site's layout; None where it does not share network totals) is given."""
    if kind == ROUND_METRICS:
        floor, length = max(min_sites, MIN_PUBLISHED_SITES), len(EVAL_METRICS)
    elif kind == NETWORK_TOTALS:
        if network is None:
            raise RefusedToOpen("this site does not share network totals: it opens no network sum")
        floor, length = max(min_sites, MIN_SITES), network.length
    else:
        raise RefusedToOpen(f"{kind!r} is not a kind of sum this site opens ({', '.join(PUBLISHED_KINDS)})")
    if vec.fingerprint != key.fingerprint:
        raise crypto.KeyMismatchError(f"the {kind} sum was made under key {vec.fingerprint}")
    if vec.length != length:
        raise RefusedToOpen(f"a {kind} sum has {length} values, this one {vec.length}: not opened")
    plain = crypto.decrypt(key, vec)
    values = decode_totals(plain, network) if kind == NETWORK_TOTALS and network else plain
    sites = round(float(values[-1]))  # the count is inside the ciphertext, summed like the rest
    if sites < floor:
        raise RefusedToOpen(f"the {kind} sum counts {sites} sites, fewer than {floor}: not opened")
    if kind == ROUND_METRICS:
        return metric_ratios(dict(zip(EVAL_METRICS, plain, strict=True))), sites
    return [float(v) for v in values], sites


def metric_ratios(sums: dict[str, float]) -> list[float]:
    """The round's published metrics (``PUBLISHED_METRICS``) from its summed evaluation sums."""
    means, weight = holdout_means(sums), float(sums["train_weight"])
    return [
        float(sums["weight_x_train_pinball"]) / weight if weight > 1e-9 else float("nan"),
        *(means[k] for k in ("mae", "naive_mae", "pinball", "coverage_80")),
        float(round(float(sums["nodes"]))),
    ]


def check_first_opening(cfg: NodeConfig, run_token: str, kind: str, server_round: int, digest: str) -> None:
    """A site opens one sum of each kind per round of a run (the network totals: one per run), or
    the very same ciphertext again (a coordinator that resumed): opening a second, different sum of
    other sites would let a coordinator subtract the two and read the site that differs."""
    path = cfg.private_dir / OPENED_FILE
    try:
        ledger = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        ledger = {}
    slot = f"{run_token}/{kind}" + ("" if kind == NETWORK_TOTALS else f"/{server_round}")
    if ledger.get(slot, digest) != digest:
        scope = "run" if kind == NETWORK_TOTALS else f"round {server_round}"
        raise RefusedToOpen(f"this site already opened another {kind} sum in this {scope}: not opened")
    ledger[slot] = digest
    with owner_only(cfg.private_dir):
        write_json_atomic(path, dict(list(ledger.items())[-KEEP_OPENED:]))
