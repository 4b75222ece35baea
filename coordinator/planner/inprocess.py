"""Run the real ServerApp and ClientApp in one process (tests, simulations, CI).

``InProcessGrid`` is a Flower Grid that hands each message to ``client_app(message, context)`` of
the destination node and round-trips every message through protobuf bytes, exactly what crosses
the wire in a deployment. An ``observer`` sees every reply the ServerApp receives, as bytes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from common.settings import with_defaults

CLIENT_EXCEPTION = 300


def wire(msg: Message) -> tuple[Message, bytes]:
    """Serialise and parse a message as the transport does; return the copy and its bytes."""
    blob = message_to_proto(msg).SerializeToString()
    proto = ProtoMessage()
    proto.ParseFromString(blob)
    return message_from_proto(proto), blob


class InProcessGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        node_configs: list[dict],
        run_config: dict,
        run_id: int = 1,
        observer: Callable[[Message, bytes], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._client_app = client_app
        self._run = Run.create_empty(run_id)
        self._run_id = run_id
        self._contexts = {
            1000 + i: Context(
                run_id=run_id, node_id=1000 + i, node_config=cfg, state=RecordDict(), run_config=run_config
            )
            for i, cfg in enumerate(node_configs)
        }
        self._observer = observer
        self._progress = progress
        self._replies: dict[str, Message] = {}
        self.down: set[int] = set()  # node ids that no longer answer (fault injection)
        self.timings: list[tuple[str, str, int, float]] = []  # (round, message type, node, seconds)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self._contexts if n not in self.down]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            ids.append(msg.metadata.message_id)
            if msg.metadata.dst_node_id in self.down:
                continue
            self._replies[msg.metadata.message_id] = self._deliver(msg)
        return ids

    def _deliver(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        inbound, _ = wire(msg)
        started = time.perf_counter()
        try:
            reply = self._client_app(inbound, self._contexts[node])
        except Exception as exc:  # the SuperNode turns ClientApp exceptions into error replies
            reply = Message(Error(CLIENT_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=inbound)
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        outbound, blob = wire(reply)
        seconds = time.perf_counter() - started
        self.timings.append((msg.metadata.group_id, msg.metadata.message_type, node, seconds))
        if self._observer:
            self._observer(outbound, blob)
        if self._progress:
            self._progress(f"node {node} {msg.metadata.message_type} {seconds:.1f}s")
        return outbound

    def deployment_seconds(self, total: float) -> float:
        """What ``total`` seconds of this in-process run (nodes one after another) would take with
        the nodes working in parallel: each exchange's slowest node, plus everything else."""
        slowest: dict[tuple[str, str], float] = {}
        for group, kind, _, seconds in self.timings:
            slowest[(group, kind)] = max(slowest.get((group, kind), 0.0), seconds)
        return total - sum(t[3] for t in self.timings) + sum(slowest.values())

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_inprocess(
    server_app: ServerApp,
    client_app: ClientApp,
    node_dirs: list[Path],
    run_config: dict,
    torch_threads: int = 1,
    grid_class: Callable[..., InProcessGrid] = InProcessGrid,
    **grid_kwargs,
) -> InProcessGrid:
    """Run one federation over the given node folders; return the grid (for inspection).
    ``run_config`` goes over the app's defaults, as ``flwr run --run-config`` does."""
    run_config = with_defaults(run_config)
    nodes = [
        {"node-dir": str(Path(d).resolve()), "torch-threads": torch_threads, "quiet": True} for d in node_dirs
    ]
    grid = grid_class(client_app, nodes, run_config, **grid_kwargs)
    context = Context(
        run_id=grid._run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=run_config,
    )
    server_app(grid, context)
    return grid
