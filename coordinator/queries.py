"""The run's queries besides training: one encrypted sum over the nodes that agree on what it covers.

* the cross-site profile, before round 1 (common/denoise.py): which shared groups each site holds,
  then the moments of the groups enough sites hold, then every site keeps the summed shapes;
* the network forecast, after the last round (common/network.py): every site's totals per group
  and period, forecast with the run's final model.

The coordinator sums and keeps ciphertexts only; the sites open the network totals for the planner
(coordinator/publish.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType
from flwr.common.logger import log
from flwr.serverapp import Grid

from common import crypto
from common.codec import CONFIG, MOMENTS, NETWORK, SITE_GROUPS, encrypted_record
from common.denoise import DenoiseSettings
from common.network import MIN_SITES, Layout
from coordinator.aggregation import EncryptedFedAvg, RoundFailed
from coordinator.checkpoints import NETWORK_FILE, NETWORK_META, PROFILE_FILE, PROFILE_META

OTHER_PERIODS = "forecasts other periods than the network's"
OTHER_GRID = "its history ends on another date than the network's"


def ask(
    fedavg: EncryptedFedAvg,
    grid: Grid,
    arrays: ArrayRecord,
    config: ConfigRecord,
    action: str,
    timeout: float,
    global_round: int | None = None,
    server_round: int | None = None,
) -> Iterable[Message]:
    """Send ``query.action`` (plain ``query`` when empty) to every node, as of ``server_round``
    (default: the latest round done); return the replies."""
    done = server_round or fedavg.run.last_round or fedavg.round_offset
    kind = f"{MessageType.QUERY}.{action}" if action else MessageType.QUERY
    messages = fedavg.messages(arrays, config, grid, kind, done - fedavg.round_offset, global_round)
    return grid.send_and_receive(messages, timeout=timeout)


def agreed_sum(
    fedavg: EncryptedFedAvg,
    replies: Iterable[Message],
    name: str,
    length: int,
    minimum: int,
    agree_on: str,
    disagreement: str,
) -> tuple[crypto.EncryptedVector | None, list[dict], list[str], str]:
    """Sum the ``name`` replies whose config ``agree_on`` is the most common value (the others
    are refused with ``disagreement``). Returns (the sum, or None when fewer than ``minimum``
    are usable; replies used; refusals; the value)."""
    decoded, refused = fedavg.valid(replies, (name,))
    common = Counter(d["config"].get(agree_on, "") for d in decoded).most_common(1)
    value = common[0][0] if common else ""
    agreeing = []
    for d in decoded:
        if d["config"].get(agree_on, "") == value:
            agreeing.append(d)
        else:
            refused.append(f"node {d['node']}: refused: {disagreement}")
    try:
        total, good = fedavg.add(agreeing, name, length, refused, minimum)
    except RoundFailed as exc:
        refused.append(str(exc))
        return None, [], refused, value
    return total, good, refused, value


def network_round(
    fedavg: EncryptedFedAvg,
    grid: Grid,
    arrays: ArrayRecord,
    config: ConfigRecord,
    layout: Layout,
    min_sites: int,
    timeout: float,
    model_round: int | None = None,
) -> dict:
    """Ask every node for its encrypted totals, forecast with the global model of
    ``model_round`` (default: the last round), and sum those that agree on the periods.

    Fewer than ``min_sites`` usable replies: nothing is summed or written but the refusal."""
    done = fedavg.run.last_round or fedavg.round_offset
    replies = ask(fedavg, grid, arrays, config, "", timeout, model_round or done)
    total, good, refused, dates = agreed_sum(
        fedavg, replies, NETWORK, layout.length, min_sites, "network-dates", OTHER_PERIODS
    )
    meta = {
        "round": model_round or done,
        "group_by": layout.group_by,
        "groups": list(layout.groups),
        "dates": dates.split(",") if dates else [],
        "min_sites": min_sites,
    }
    if total is None:
        meta.update(status="refused", reason=refused[-1], sites=0, nodes=[], refused=refused[:-1])
    else:
        fedavg.run.write(NETWORK_FILE, total.to_bytes())
        meta.update(status="summed", sites=len(good), nodes=[d["node"] for d in good], refused=refused)
    for line in refused:
        log(WARNING, "network forecast: %s", line)
    fedavg.run.write_json(NETWORK_META, meta)
    log(INFO, "network forecast: %s over %d sites", meta["status"], meta["sites"])
    return meta


def profile_round(
    fedavg: EncryptedFedAvg, grid: Grid, config: ConfigRecord, s: DenoiseSettings, timeout: float
) -> dict:
    """Sites per group, then the moments of the groups enough sites hold, then every node keeps
    the shapes of the summed moments. Returns what ``PROFILE_META`` records; its ``id`` (a
    digest of the summed ciphertext) goes into every later message of the run."""
    minimum = max(s.min_sites, MIN_SITES)
    meta: dict = {"group_by": s.group_by, "groups": len(s.groups), "rank": s.rank, "min_sites": minimum}
    replies = ask(fedavg, grid, ArrayRecord(), config, "profile_site_groups", timeout)
    counts, _, refused, _ = agreed_sum(
        fedavg, replies, SITE_GROUPS, len(s.groups) + 1, minimum, "profile-end", OTHER_GRID
    )
    moments = None
    if counts is not None:
        record = encrypted_record(**{SITE_GROUPS: counts})
        replies = ask(fedavg, grid, record, config, "profile_moments", timeout)
        moments, good, more, end = agreed_sum(
            fedavg, replies, MOMENTS, s.moments_length, minimum, "profile-end", OTHER_GRID
        )
        refused += more
    if moments is None:
        meta.update(status="refused", reason=refused[-1], sites=0, refused=refused[:-1])
        _write_profile_meta(fedavg, meta)
        raise RoundFailed(f"cross-site profile: {refused[-1]}")
    blob = moments.to_bytes()
    profile_id = hashlib.sha256(blob).hexdigest()[:16]
    fedavg.run.write(PROFILE_FILE, blob)
    adopt = ConfigRecord({**dict(config), "denoise-id": profile_id})
    record = encrypted_record(**{MOMENTS: moments})
    kept = []
    for msg in ask(fedavg, grid, record, adopt, "profile_adopt", timeout):
        if msg.has_error():
            refused.append(f"node {msg.metadata.src_node_id}: did not keep it: {msg.error.reason}")
        elif msg.content[CONFIG].get("denoise-id") == profile_id:
            kept.append(msg.metadata.src_node_id)
    meta.update(status="summed", id=profile_id, end=end, sites=len(good), adopted=kept, refused=refused)
    meta["nodes"] = [d["node"] for d in good]
    _write_profile_meta(fedavg, meta)
    log(INFO, "cross-site profile %s: %d sites summed, %d kept it", profile_id, len(good), len(kept))
    return meta


def _write_profile_meta(fedavg: EncryptedFedAvg, meta: dict) -> None:
    for line in meta.get("refused", []):
        log(WARNING, "cross-site profile: %s", line)
    fedavg.run.write_json(PROFILE_META, meta)
