"""Encrypted FedAvg: validate each reply and sum the ciphertexts; the coordinator never decrypts.

The coordinator holds a context without secret key. Each node replies Enc([n·w, n·loss, n])
(common/codec.py); the sum Enc([Σn·w, Σn·loss, Σn]) is what only key holders turn into the global
model. A reply made under another key, of another length or scale, or not decodable is refused and
the round goes on with the others, as long as ``min_nodes`` valid replies arrived. Every sum is
kept in the run folder (coordinator/checkpoints.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common import crypto
from common.codec import (
    CONFIG,
    EVAL_METRICS,
    GLOBAL,
    METRICS,
    SCALE_BITS,
    STATE,
    UPDATE,
    encrypted_record,
    read_encrypted,
    to_array,
)
from coordinator.checkpoints import RunRecord, read_sum


class RoundFailed(RuntimeError):
    """Fewer valid replies than the configured minimum."""


class EncryptedFedAvg(Strategy):
    def __init__(
        self, key: crypto.KeyContext, run: RunRecord, min_nodes: int, stateful: bool = False
    ) -> None:
        if key.has_secret_key:
            raise crypto.CryptoError("the coordinator must not hold a secret key; give it public.ctx")
        self.key, self.run, self.min_nodes = key, run, min_nodes
        self.stateful = stateful  # the nodes keep a server-optimizer state: resend aggregates they missed
        self.state_length: int | None = None
        self.round_offset = 0  # rounds already done before a resume

    def summary(self) -> None:
        log(INFO, "\t├── EncryptedFedAvg: key %s, min nodes %d", self.key.fingerprint, self.min_nodes)
        log(INFO, "\t└── checkpoints in %s", self.run.folder)

    # ---- messages out -------------------------------------------------------------------------
    def messages(
        self,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        kind: str,
        server_round: int,
        global_round=None,
    ) -> list[Message]:
        """One message per connected node; ``global_round``: the aggregate round ``arrays`` holds."""
        nodes = self._wait_for_nodes(grid)
        server_round += self.round_offset
        config["server-round"], config["fingerprint"] = server_round, self.key.fingerprint
        config["round-nodes"] = len(nodes)  # each node keeps its reply small enough for this many
        config["run-token"] = self.run.run_token
        if global_round is not None:
            config["global-round"] = global_round
        out = []
        for n in nodes:
            record = self._with_missed(arrays, n, global_round) if len(arrays) else arrays
            content = RecordDict({GLOBAL: record, CONFIG: config} if len(record) else {CONFIG: config})
            out.append(Message(content=content, message_type=kind, dst_node_id=n, group_id=str(server_round)))
        return out

    def _with_missed(self, arrays: ArrayRecord, node: int, global_round: int | None) -> ArrayRecord:
        """With a server optimizer, the aggregates before ``global_round`` that ``node`` has not
        applied yet (from the checkpoints), so its copy of the replicated state catches up."""
        if not self.stateful or not global_round or STATE not in arrays:
            return arrays
        missed = range(self.run.applied.get(node, 0) + 1, global_round)
        if not missed:
            return arrays
        record = ArrayRecord({name: arrays[name] for name in arrays})
        for r in missed:
            record[f"{STATE}-{r:04d}"] = to_array(read_sum(self.run.folder, r, "state"))
        return record

    def _wait_for_nodes(self, grid: Grid, poll: float = 1.0) -> list[int]:
        while len(nodes := sorted(grid.get_node_ids())) < self.min_nodes:
            log(INFO, "waiting for nodes: %d connected, %d required", len(nodes), self.min_nodes)
            time.sleep(poll)
        return nodes

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        previous = server_round + self.round_offset - 1
        return self.messages(arrays, config, grid, MessageType.TRAIN, server_round, previous)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        if not len(arrays):
            return []
        this = server_round + self.round_offset
        return self.messages(arrays, config, grid, MessageType.EVALUATE, server_round, this)

    # ---- replies in ---------------------------------------------------------------------------
    def valid(self, replies: Iterable[Message], names: tuple[str, ...]) -> tuple[list[dict], list[str]]:
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
                    self.run.applied[node] = int(config["applied-round"])
                decoded.append({"node": node, "config": config, **vecs})
            except (crypto.CryptoError, KeyError) as exc:
                refused.append(f"node {node}: refused: {exc}")
        return decoded, refused

    def add(
        self, decoded: list[dict], name: str, expected: int, refused: list[str], minimum: int | None = None
    ) -> tuple[crypto.EncryptedVector, list[dict]]:
        """Stream the sum; a reply of the wrong shape or with corrupt bytes is refused on its own."""
        minimum = self.min_nodes if minimum is None else minimum
        total, good = crypto.RunningSum(self.key, expected, SCALE_BITS[name]), []
        for d in decoded:
            try:
                total.add(d[name])
                good.append(d)
            except crypto.CryptoError as exc:
                refused.append(f"node {d['node']}: refused: {name}: {exc}")
        if len(good) < minimum:
            raise RoundFailed(f"{len(good)} valid {name} replies, the minimum is {minimum}")
        return total.result(), good

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        server_round += self.round_offset
        decoded, refused = self.valid(replies, (STATE,))
        if not decoded:
            raise RoundFailed(f"round {server_round}: no valid replies ({'; '.join(refused)})")
        decoded = same_start(decoded, refused)
        expected = self.state_length or Counter(d[STATE].length for d in decoded).most_common(1)[0][0]
        state, good = self.add(decoded, STATE, expected, refused)
        self.state_length = state.length
        return self._kept(server_round, "train", STATE, state, good, refused)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        decoded, refused = self.valid(replies, (METRICS,))
        if not decoded:
            log(WARNING, "round %d evaluate: no valid replies", server_round)
            return None
        metrics, good = self.add(decoded, METRICS, len(EVAL_METRICS), refused)
        return self._kept(server_round, "evaluate", "eval_metrics", metrics, good, refused)[1]

    def _kept(self, server_round: int, phase: str, name: str, vec, good: list[dict], refused: list[str]):
        for line in refused:
            log(WARNING, "round %d%s: %s", server_round, "" if phase == "train" else f" {phase}", line)
        self.run.keep_sum(server_round, name, vec)
        self.run.step(server_round, phase, [d["node"] for d in good], refused)
        counts = MetricRecord({"replies": len(good), "refused": len(refused)})
        return encrypted_record(**{STATE: vec}) if phase == "train" else None, counts


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
