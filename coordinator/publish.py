"""What the planner is shown, opened by the sites: the coordinator and the planner hold no secret key.

After a round's evaluation the coordinator sends the round's summed metrics (training loss,
hold-out errors, coverage, the count of sites) back to the sites; after the last round, the summed
network totals. Each site checks the sum (warehouse_node/published.py), decrypts it and replies
with its plaintext (for the metrics: their ratios, ``PUBLISHED_METRICS``). The coordinator keeps
the values only when at least ``min_nodes`` sites reply with the same ones (decryption is
deterministic: honest sites agree), and records them in progress.json (round metrics) or
network.json (the network totals), where the planner reads them.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ConfigRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from common import crypto
from common.codec import CONFIG, NETWORK_TOTALS, PUBLISHED_METRICS, ROUND_METRICS, encrypted_record
from common.network import Layout
from coordinator import queries
from coordinator.aggregation import EncryptedFedAvg
from coordinator.checkpoints import NETWORK_FILE, NETWORK_META, checkpoint_file


def open_by_sites(
    strategy: EncryptedFedAvg,
    grid: Grid,
    kind: str,
    vec: crypto.EncryptedVector,
    config: ConfigRecord,
    timeout: float,
    length: int,
    server_round: int | None = None,
) -> tuple[list[float] | None, int, list[str]]:
    """Ask every site to open the sum ``vec`` of ``kind`` (``length`` values back) of
    ``server_round`` (default: the latest round); return (the values most sites agree on, or None
    when fewer than the minimum of nodes agree; how many agree; refusals). Replies are compared to
    9 significant digits."""
    ask = ConfigRecord({**dict(config), "publish-kind": kind})
    record = encrypted_record(**{kind: vec})
    replies = queries.ask(strategy, grid, record, ask, "publish", timeout, server_round=server_round)
    votes: Counter = Counter()
    first: dict[tuple, list[float]] = {}
    refused = []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            refused.append(f"node {node}: did not open it: {msg.error.reason}")
            continue
        reply = dict(msg.content[CONFIG]) if CONFIG in msg.content.config_records else {}
        values = _numbers(reply.get("values"), length)
        if (
            reply.get("fingerprint") != strategy.key.fingerprint
            or reply.get("publish-kind") != kind
            or not values
        ):
            refused.append(f"node {node}: refused: no {length} {kind} values under this run's key")
            continue
        agreed = tuple(float(f"{v:.9g}") for v in values)
        votes[agreed] += 1
        first.setdefault(agreed, values)
    if not votes:
        return None, 0, refused
    agreed, count = votes.most_common(1)[0]
    if len(votes) > 1:
        log(WARNING, "%s: the sites opened different values; %d agree", kind, count)
    if count < strategy.min_nodes:
        refused.append(f"{count} sites agree on the {kind} values, the minimum is {strategy.min_nodes}")
        return None, count, refused
    return first[agreed], count, refused


def _numbers(values: object, length: int) -> list[float] | None:
    """``values`` as ``length`` floats (NaN allowed: a round nobody trained in), else None."""
    if not isinstance(values, list) or len(values) != length:
        return None
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return None if any(math.isinf(v) for v in numbers) else numbers


def publish_round_metrics(
    strategy: EncryptedFedAvg, grid: Grid, server_round: int, config: ConfigRecord, timeout: float
) -> dict | None:
    """Have the sites open round ``server_round``'s summed metrics; record them in progress.json."""
    path = checkpoint_file(strategy.run.folder, server_round, "eval_metrics")
    if not path.is_file():
        return None
    vec = crypto.EncryptedVector.from_bytes(path.read_bytes())
    length = len(PUBLISHED_METRICS)
    values, count, refused = open_by_sites(
        strategy, grid, ROUND_METRICS, vec, config, timeout, length, server_round
    )
    for line in refused:
        log(WARNING, "round %d metrics: %s", server_round, line)
    entry = {"round": server_round, "phase": "publish", "replies": count, "refused": refused}
    entry["metrics"] = None if values is None else dict(zip(PUBLISHED_METRICS, values, strict=True))
    strategy.run.record(entry | {"time": time.time()})
    return entry["metrics"]


def publish_missing(strategy: EncryptedFedAvg, grid: Grid, config: ConfigRecord, timeout: float) -> None:
    """On resume: open the rounds already done whose metrics were summed but never opened (the
    coordinator stopped in between); the sites open the same ciphertext again."""
    opened = {h["round"] for h in strategy.run.history if h["phase"] == "publish"}
    for r in range(1, strategy.round_offset + 1):
        if r not in opened and checkpoint_file(strategy.run.folder, r, "eval_metrics").is_file():
            publish_round_metrics(strategy, grid, r, config, timeout)


def publish_network(
    strategy: EncryptedFedAvg, grid: Grid, meta: dict, config: ConfigRecord, timeout: float
) -> dict:
    """Have the sites open the summed network totals (when summed); add them to network.json."""
    folder = strategy.run.folder
    if meta.get("status") != "summed":
        return meta
    vec = crypto.EncryptedVector.from_bytes(Path(folder / NETWORK_FILE).read_bytes())
    length = Layout(str(meta["group_by"]), tuple(meta["groups"]), len(meta["dates"])).cells
    values, count, refused = open_by_sites(strategy, grid, NETWORK_TOTALS, vec, config, timeout, length)
    for line in refused:
        log(WARNING, "network forecast: %s", line)
    if values is None:
        meta = {**meta, "status": "not opened", "reason": refused[-1] if refused else "no site replied"}
    else:
        meta = {**meta, "status": "opened", "totals": values, "opened_by": count}
    meta["open_refused"] = refused
    strategy.run.write_json(NETWORK_META, meta)
    log(INFO, "network forecast: %s by %d sites", meta["status"], count)
    return meta
