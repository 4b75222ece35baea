"""Warehouse node ClientApp: decrypt the global model, train locally, reply encrypted.

Node config (``flower-supernode --node-config``): ``node-dir`` (folder with node.toml) and
optionally ``torch-threads``.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from common import crypto
from common.config import load_node_config
from common.records import CONFIG, GLOBAL, METRICS, STATE, UPDATE, encrypted_record, read_encrypted
from warehouse_node.federated import NodeSession, round_settings

app = ClientApp()


def _session(msg: Message, context: Context) -> NodeSession:
    threads = int(context.node_config.get("torch-threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    session = NodeSession.open(load_node_config(str(context.node_config["node-dir"])))
    announced = str(msg.content[CONFIG].get("fingerprint", ""))
    if announced != session.key.fingerprint:
        raise crypto.KeyMismatchError(
            f"coordinator announces key {announced or '(none)'}, this node holds {session.key.fingerprint}"
        )
    return session


def _global_weights(session: NodeSession, msg: Message) -> np.ndarray | None:
    if GLOBAL not in msg.content.array_records or STATE not in msg.content[GLOBAL]:
        return None  # first round: every node starts from the same seeded model
    return session.recover_weights(read_encrypted(msg.content[GLOBAL], STATE))


@app.train()
def train(msg: Message, context: Context) -> Message:
    session = _session(msg, context)
    state = session.train(round_settings(msg.content[CONFIG]), _global_weights(session, msg))
    content = RecordDict(
        {
            UPDATE: encrypted_record(**{STATE: state}),
            CONFIG: ConfigRecord({"fingerprint": session.key.fingerprint}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    session = _session(msg, context)
    weights = _global_weights(session, msg)
    if weights is None:
        raise ValueError("evaluate needs a global model, none was sent")
    metrics = session.evaluate(round_settings(msg.content[CONFIG]), weights)
    content = RecordDict(
        {
            UPDATE: encrypted_record(**{METRICS: metrics}),
            CONFIG: ConfigRecord({"fingerprint": session.key.fingerprint}),
        }
    )
    return Message(content, reply_to=msg)
