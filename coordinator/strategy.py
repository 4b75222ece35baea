"""Encrypted FedAvg: sum ciphertexts, never decrypt, checkpoint the encrypted state every round.

The coordinator holds a context without secret key. Each node replies Enc([n·w, n·loss, n]); the
sum is Enc([Σn·w, Σn·loss, Σn]), which only key holders can turn into w = Σn·w / Σn. A reply made
under another key, of another length or scale, or not decodable is refused and the round goes on
with the others, as long as ``min_nodes`` valid replies arrived.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common import crypto
from common.codec import (
    CONFIG,
    EVAL_METRICS,
    GLOBAL,
    METRIC_SCALE_BITS,
    METRICS,
    MOMENTS,
    NETWORK,
    SITE_GROUPS,
    STATE,
    UPDATE,
    encrypted_record,
    read_encrypted,
    to_array,
)
from common.denoise import PROFILE_SCALE_BITS, DenoiseSettings
from common.files import write_bytes_atomic
from common.network import DIGIT_SCALE_BITS, MIN_SITES, Layout

PROGRESS_FILE = "progress.json"
NETWORK_FILE, NETWORK_META = "network.ckks", "network.json"
PROFILE_FILE, PROFILE_META = "profile.ckks", "profile.json"  # the summed moments, never decrypted here
OTHER_PERIODS = "forecasts other periods than the network's"
OTHER_GRID = "its history ends on another date than the network's"


def checkpoint_file(folder: Path, server_round: int, name: str) -> Path:
    """A round's encrypted sum in the run folder: ``state`` (the global model), ``eval_metrics``."""
    return Path(folder) / f"round_{server_round:04d}.{name}.ckks"


class RoundFailed(RuntimeError):
    """Fewer valid replies than the configured minimum."""


class EncryptedFedAvg(Strategy):
    def __init__(
        self,
        key: crypto.KeyContext,
        checkpoint_dir: Path,
        min_nodes: int = 2,
    ) -> None:
        if key.has_secret_key:
            raise crypto.CryptoError("the coordinator must not hold a secret key; give it public.ctx")
        self.key = key
        self.checkpoint_dir = Path(checkpoint_dir)
        self.min_nodes = min_nodes
        self.state_length: int | None = None
        self.history: list[dict] = []
        self.round_offset = 0  # rounds already done before a resume
        self.privacy: dict | None = None  # (ε, δ) of the run when its updates are differentially private
        self.planned_rounds: int | None = None  # shown by `fedstock-planner status`
        self.stateful = False  # the nodes keep a server-optimizer state: resend aggregates they missed
        self.applied: dict[int, int] = {}  # node -> newest aggregate round it reported applied
        self.outcome: dict = {}  # the run's stop: round, best round, reason (coordinator/rounds.py)
        self.run_token = ""

    def summary(self) -> None:
        log(INFO, "\t├── EncryptedFedAvg: key %s, min nodes %d", self.key.fingerprint, self.min_nodes)
        log(INFO, "\t└── checkpoints in %s", self.checkpoint_dir)

    # ---- messages out -------------------------------------------------------------------------
    def _messages(
        self,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        kind: str,
        server_round: int,
        global_round: int | None = None,
    ) -> list[Message]:
        """One message per connected node; ``global_round``: the aggregate round ``arrays`` holds."""
        nodes = self._wait_for_nodes(grid)
        server_round += self.round_offset
        config["server-round"] = server_round
        config["fingerprint"] = self.key.fingerprint
        config["round-nodes"] = len(nodes)  # each node keeps its reply small enough for this many
        config["run-token"] = self.run_token
        if global_round is not None:
            config["global-round"] = global_round
        messages = []
        for n in nodes:
            record = self._missed(arrays, n, global_round) if len(arrays) else arrays
            content = (
                RecordDict({GLOBAL: record, CONFIG: config}) if len(record) else RecordDict({CONFIG: config})
            )
            messages.append(
                Message(content=content, message_type=kind, dst_node_id=n, group_id=str(server_round))
            )
        return messages

    def _missed(self, arrays: ArrayRecord, node: int, global_round: int | None) -> ArrayRecord:
        """With a server optimizer, the aggregates before ``global_round`` that ``node`` has not
        applied yet (from the checkpoints), so its copy of the replicated state catches up."""
        if not self.stateful or not global_round or STATE not in arrays:
            return arrays
        first = self.applied.get(node, 0) + 1
        missed = {
            f"{STATE}-{r:04d}": checkpoint_file(self.checkpoint_dir, r, "state")
            for r in range(first, global_round)
        }
        if not missed:
            return arrays
        record = ArrayRecord({name: arrays[name] for name in arrays})
        for name, path in missed.items():
            record[name] = to_array(crypto.EncryptedVector.from_bytes(path.read_bytes()))
        return record

    def _wait_for_nodes(self, grid: Grid, poll: float = 1.0) -> list[int]:
        while len(nodes := sorted(grid.get_node_ids())) < self.min_nodes:
            log(INFO, "waiting for nodes: %d connected, %d required", len(nodes), self.min_nodes)
            time.sleep(poll)
        return nodes

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        previous = server_round + self.round_offset - 1
        return self._messages(arrays, config, grid, MessageType.TRAIN, server_round, previous)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not len(arrays):
            return []
        this = server_round + self.round_offset
        return self._messages(arrays, config, grid, MessageType.EVALUATE, server_round, this)

    # ---- replies in ---------------------------------------------------------------------------
    def _valid(self, replies: Iterable[Message], names: tuple[str, ...]) -> tuple[list[dict], list[str]]:
        """Decode replies; return the usable ones and one line per refused reply."""
        decoded, refused = [], []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                refused.append(f"node {node}: error reply: {msg.error.reason}")
                continue
            try:
                vecs = {n: read_encrypted(msg.content[UPDATE], n) for n in names}
                for vec in vecs.values():
                    if vec.fingerprint != self.key.fingerprint:
                        raise crypto.KeyMismatchError(f"encrypted under key {vec.fingerprint}")
                config = dict(msg.content[CONFIG]) if CONFIG in msg.content.config_records else {}
                if isinstance(config.get("applied-round"), int):
                    self.applied[node] = int(config["applied-round"])
                decoded.append({"node": node, "config": config, **vecs})
            except (crypto.CryptoError, KeyError) as exc:
                refused.append(f"node {node}: refused: {exc}")
        return decoded, refused

    def _sum(
        self,
        decoded: list[dict],
        name: str,
        expected: int,
        refused: list[str],
        scale_bits: int | None = None,
        minimum: int | None = None,
    ) -> tuple[crypto.EncryptedVector, list[dict]]:
        """Stream the sum; a reply of the wrong shape or with corrupt bytes is refused on its own."""
        minimum = self.min_nodes if minimum is None else minimum
        total, good = crypto.RunningSum(self.key, expected, scale_bits), []
        for d in decoded:
            try:
                total.add(d[name])
                good.append(d)
            except crypto.CryptoError as exc:
                refused.append(f"node {d['node']}: refused: {name}: {exc}")
        if len(good) < minimum:
            raise RoundFailed(f"{len(good)} valid {name} replies, the minimum is {minimum}")
        return total.result(), good

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        decoded, refused = self._valid(replies, (STATE,))
        if not decoded:
            raise RoundFailed(f"round {server_round}: no valid replies ({'; '.join(refused)})")
        decoded = same_start(decoded, refused)
        expected = self.state_length or Counter(d[STATE].length for d in decoded).most_common(1)[0][0]
        state, good = self._sum(decoded, STATE, expected, refused)
        for line in refused:
            log(WARNING, "round %d: %s", server_round, line)
        self.state_length = state.length
        self._checkpoint(server_round, "state", state)
        self._progress(server_round, "train", good, refused)
        return encrypted_record(**{STATE: state}), MetricRecord(
            {"replies": len(good), "refused": len(refused)}
        )

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        decoded, refused = self._valid(replies, (METRICS,))
        if not decoded:
            log(WARNING, "round %d evaluate: no valid replies", server_round)
            return None
        metrics, good = self._sum(decoded, METRICS, len(EVAL_METRICS), refused, METRIC_SCALE_BITS)
        for line in refused:
            log(WARNING, "round %d evaluate: %s", server_round, line)
        self._checkpoint(server_round, "eval_metrics", metrics)
        self._progress(server_round, "evaluate", good, refused)
        return MetricRecord({"replies": len(good), "refused": len(refused)})

    # ---- queries: one encrypted sum over the nodes that agree on a config value ------------------
    def _ask(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        config: ConfigRecord,
        action: str,
        timeout: float,
        global_round: int | None = None,
        server_round: int | None = None,
    ):
        """Send ``query.action`` (plain ``query`` when empty) to every node, as of ``server_round``
        (default: the latest round done); return the replies."""
        done = server_round or max((h["round"] for h in self.history), default=self.round_offset)
        kind = f"{MessageType.QUERY}.{action}" if action else MessageType.QUERY
        messages = self._messages(arrays, config, grid, kind, done - self.round_offset, global_round)
        return grid.send_and_receive(messages, timeout=timeout)

    def _query_sum(
        self,
        replies: Iterable[Message],
        name: str,
        length: int,
        scale_bits: int,
        minimum: int,
        agree_on: str,
        disagreement: str,
    ) -> tuple[crypto.EncryptedVector | None, list[dict], list[str], str]:
        """Sum the ``name`` replies whose config ``agree_on`` is the most common value (the others
        are refused with ``disagreement``). Returns (the sum, or None when fewer than ``minimum``
        are usable; replies used; refusals; the value)."""
        decoded, refused = self._valid(replies, (name,))
        common = Counter(d["config"].get(agree_on, "") for d in decoded).most_common(1)
        value = common[0][0] if common else ""
        agreeing = []
        for d in decoded:
            if d["config"].get(agree_on, "") == value:
                agreeing.append(d)
            else:
                refused.append(f"node {d['node']}: refused: {disagreement}")
        try:
            total, good = self._sum(agreeing, name, length, refused, scale_bits, minimum)
        except RoundFailed as exc:
            refused.append(str(exc))
            return None, [], refused, value
        return total, good, refused, value

    # ---- the network forecast, after the last round ----------------------------------------------
    def network_round(
        self,
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
        done = max((h["round"] for h in self.history), default=self.round_offset)
        replies = self._ask(grid, arrays, config, "", timeout, model_round or done)
        total, good, refused, dates = self._query_sum(
            replies, NETWORK, layout.length, DIGIT_SCALE_BITS, min_sites, "network-dates", OTHER_PERIODS
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
            self._write(self.checkpoint_dir / NETWORK_FILE, total.to_bytes())
            meta.update(status="summed", sites=len(good), nodes=[d["node"] for d in good], refused=refused)
        for line in refused:
            log(WARNING, "network forecast: %s", line)
        self._write(self.checkpoint_dir / NETWORK_META, (json.dumps(meta, indent=2) + "\n").encode())
        log(INFO, "network forecast: %s over %d sites", meta["status"], meta["sites"])
        return meta

    # ---- the cross-site profile, before round 1 (common/denoise.py) -------------------------------
    def profile_round(self, grid: Grid, config: ConfigRecord, s: DenoiseSettings, timeout: float) -> dict:
        """Sites per group, then the moments of the groups enough sites hold, then every node keeps
        the shapes of the summed moments. Returns what ``PROFILE_META`` records; its ``id`` (a
        digest of the summed ciphertext) goes into every later message of the run."""
        minimum = max(s.min_sites, MIN_SITES)
        meta: dict = {"group_by": s.group_by, "groups": len(s.groups), "rank": s.rank, "min_sites": minimum}
        replies = self._ask(grid, ArrayRecord(), config, "profile_site_groups", timeout)
        counts, _, refused, _ = self._query_sum(
            replies, SITE_GROUPS, len(s.groups) + 1, METRIC_SCALE_BITS, minimum, "profile-end", OTHER_GRID
        )
        moments = None
        if counts is not None:
            replies = self._ask(
                grid, encrypted_record(**{SITE_GROUPS: counts}), config, "profile_moments", timeout
            )
            moments, good, more, end = self._query_sum(
                replies, MOMENTS, s.moments_length, PROFILE_SCALE_BITS, minimum, "profile-end", OTHER_GRID
            )
            refused += more
        if moments is None:
            meta.update(status="refused", reason=refused[-1], sites=0, refused=refused[:-1])
            self._write_profile_meta(meta)
            raise RoundFailed(f"cross-site profile: {refused[-1]}")
        blob = moments.to_bytes()
        profile_id = hashlib.sha256(blob).hexdigest()[:16]
        self._write(self.checkpoint_dir / PROFILE_FILE, blob)
        adopt = ConfigRecord({**dict(config), "denoise-id": profile_id})
        replies = self._ask(grid, encrypted_record(**{MOMENTS: moments}), adopt, "profile_adopt", timeout)
        kept = []
        for msg in replies:
            if msg.has_error():
                refused.append(f"node {msg.metadata.src_node_id}: did not keep it: {msg.error.reason}")
            elif msg.content[CONFIG].get("denoise-id") == profile_id:
                kept.append(msg.metadata.src_node_id)
        meta.update(status="summed", id=profile_id, end=end, sites=len(good), adopted=kept, refused=refused)
        meta["nodes"] = [d["node"] for d in good]
        self._write_profile_meta(meta)
        log(INFO, "cross-site profile %s: %d sites summed, %d kept it", profile_id, len(good), len(kept))
        return meta

    def _write_profile_meta(self, meta: dict) -> None:
        for line in meta.get("refused", []):
            log(WARNING, "cross-site profile: %s", line)
        self._write(self.checkpoint_dir / PROFILE_META, (json.dumps(meta, indent=2) + "\n").encode())

    # ---- checkpoints --------------------------------------------------------------------------
    def _write(self, path: Path, blob: bytes) -> None:
        write_bytes_atomic(path, blob)  # a crash never leaves a half-written file

    def _checkpoint(self, server_round: int, name: str, vec: crypto.EncryptedVector) -> None:
        self._write(checkpoint_file(self.checkpoint_dir, server_round, name), vec.to_bytes())

    def _progress(self, server_round: int, phase: str, used: list[dict], refused: list[str]) -> None:
        entry = {"round": server_round, "phase": phase, "replies": len(used), "refused": refused}
        self.record(entry | {"nodes": [d["node"] for d in used], "time": time.time()})

    def record(self, entry: dict) -> None:
        """Add one event of the run to progress.json (rewritten whole, atomically)."""
        self.history.append(entry)
        body = {
            "fingerprint": self.key.fingerprint,
            "last_round": entry["round"],
            "planned_rounds": self.planned_rounds,
            "history": self.history,
        }
        if self.privacy is not None:
            body["privacy"] = self.privacy
        if self.outcome:
            body["outcome"] = self.outcome
        body["run_token"], body["applied"] = self.run_token, {str(n): r for n, r in self.applied.items()}
        self._write(self.checkpoint_dir / PROGRESS_FILE, (json.dumps(body, indent=2) + "\n").encode())

    def resume_after(self, done: int) -> None:
        """Continue after ``done`` rounds: keep their history, drop anything logged past them."""
        self.round_offset = done
        path = self.checkpoint_dir / PROGRESS_FILE
        old = json.loads(path.read_text()) if path.is_file() else {}
        self.history = [h for h in old.get("history", []) if h["round"] <= done]
        self.run_token = old.get("run_token") or self.run_token  # the nodes' server state is keyed by it
        self.applied = {int(n): min(int(r), done) for n, r in old.get("applied", {}).items()}
        outcome = old.get("outcome", {})
        self.outcome = outcome if outcome.get("round", done + 1) <= done else {}


def same_start(decoded: list[dict], refused: list[str]) -> list[dict]:
    """Replies trained from the model most sites trained from (the digest each reply names); a
    site whose copy of the global model or server state went astray is refused by name. A reply
    that names no model is not judged by it."""
    starts = Counter(d["config"]["start-model"] for d in decoded if d["config"].get("start-model"))
    if not starts:
        return decoded
    common = starts.most_common(1)[0][0]
    kept = []
    for d in decoded:
        start = d["config"].get("start-model", common)
        if start == common:
            kept.append(d)
        else:
            refused.append(
                f"node {d['node']}: refused: trained from global model {start}, the other sites from {common}"
            )
    return kept


def _round_of(path: Path) -> int:
    return int(path.name.split("_")[1].split(".")[0])


def latest_checkpoint(checkpoint_dir: Path) -> tuple[int, Path] | None:
    """The newest round whose encrypted global state is intact; torn files are reported and skipped.

    Writes are atomic (temp file + rename), so a torn checkpoint means damage after the fact (a
    copied or truncated file); resuming from it would corrupt every later round."""
    for path in sorted(Path(checkpoint_dir).glob("round_*.state.ckks"), reverse=True):
        try:
            crypto.EncryptedVector.from_bytes(path.read_bytes())
        except crypto.CryptoError as exc:
            log(WARNING, "checkpoint %s is torn (%s): skipped", path.name, exc)
            continue
        return _round_of(path), path
    return None


def load_state(key: crypto.KeyContext, path: Path) -> ArrayRecord:
    vec = crypto.EncryptedVector.from_bytes(path.read_bytes())
    if vec.fingerprint != key.fingerprint:
        raise crypto.KeyMismatchError(f"checkpoint {path} was made under key {vec.fingerprint}")
    return encrypted_record(**{STATE: vec})
