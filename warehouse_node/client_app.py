"""Warehouse node ClientApp: decrypt the global model, train locally, reply encrypted.

Node config (``flower-supernode --node-config``): ``node-dir`` (folder with node.toml), optionally
``data`` (raw data file) and ``keys`` (folder with secret.ctx) overriding node.toml, and
``torch-threads``. Each step prints one ``fedstock-node |`` line, which ``fedstock-node join`` shows
(``quiet=true`` in the node config, as in-process runs set it, keeps them off).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from common import crypto
from common.config import NodeConfig, load_node_config, with_site_files
from common.denoise import DenoiseError
from common.network import NetworkError
from common.records import (
    CONFIG,
    GLOBAL,
    METRICS,
    MOMENTS,
    NETWORK,
    SITE_GROUPS,
    STATE,
    UPDATE,
    encrypted_record,
    read_encrypted,
)
from warehouse_node import journal
from warehouse_node.federated import NodeSession, RoundSettings, round_settings

app = ClientApp()
LOG_PREFIX = "fedstock-node | "


def say(context: Context, line: str) -> None:
    if not context.node_config.get("quiet", False):
        print(LOG_PREFIX + line, flush=True)


def node_config(context: Context) -> NodeConfig:
    nc = context.node_config
    keys = str(nc.get("keys", ""))
    secret = f"{keys}/{crypto.SECRET_CONTEXT_FILE}" if keys else None
    return with_site_files(load_node_config(str(nc["node-dir"])), str(nc.get("data", "")), secret)


def _session(msg: Message, context: Context) -> NodeSession:
    threads = int(context.node_config.get("torch-threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    session = NodeSession.open(node_config(context))
    announced = str(msg.content[CONFIG].get("fingerprint", ""))
    if announced != session.key.fingerprint:
        say(context, f"refused: the coordinator announces key {announced or '(none)'}")
        raise crypto.KeyMismatchError(
            f"coordinator announces key {announced or '(none)'}, this node holds {session.key.fingerprint}"
        )
    return session


def _global_weights(session: NodeSession, msg: Message) -> np.ndarray | None:
    if GLOBAL not in msg.content.array_records or STATE not in msg.content[GLOBAL]:
        return None  # first round: every node starts from the same seeded model
    return session.recover_weights(read_encrypted(msg.content[GLOBAL], STATE))


def _reply(msg: Message, session: NodeSession, name: str, vec: crypto.EncryptedVector, **extra) -> Message:
    config = ConfigRecord({"fingerprint": session.key.fingerprint, **extra})
    return Message(RecordDict({UPDATE: encrypted_record(**{name: vec}), CONFIG: config}), reply_to=msg)


def _sent(vec: crypto.EncryptedVector) -> int:
    return sum(len(c) for c in vec.chunks)


@app.train()
def train(msg: Message, context: Context) -> Message:
    session = _session(msg, context)
    settings = round_settings(msg.content[CONFIG])
    run, rnd = context.run_id, settings.server_round
    say(
        context,
        f"run {run} round {rnd}: joined ({settings.nodes} sites), training {settings.train.epochs} epochs",
    )
    weights = _global_weights(session, msg)

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        say(context, f"run {run} round {rnd}: epoch {epoch}/{epochs}, pinball loss {loss:.4f}")

    state = session.train(settings, weights, on_epoch)
    journal.record(session.cfg, "train", run=run, round=rnd, bytes=_sent(state))
    say(context, f"run {run} round {rnd}: update sent, {_sent(state) / 1e6:.2f} MB encrypted")
    return _reply(msg, session, STATE, state)


def _with_global_model(
    msg: Message, context: Context, step: str
) -> tuple[NodeSession, np.ndarray, RoundSettings]:
    session = _session(msg, context)
    weights = _global_weights(session, msg)
    if weights is None:
        raise ValueError(f"{step} needs the global model, none was sent")
    return session, weights, round_settings(msg.content[CONFIG])


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    session, weights, settings = _with_global_model(msg, context, "evaluate")
    run, rnd = context.run_id, settings.server_round
    metrics = session.evaluate(settings, weights, run)
    model = journal.model_fingerprint(weights)
    journal.record(session.cfg, "evaluate", run=run, round=rnd, model=model, bytes=_sent(metrics))
    say(context, f"run {run} round {rnd}: global model {model} decrypted and scored, encrypted scores sent")
    return _reply(msg, session, METRICS, metrics)


@app.query()
def network_totals(msg: Message, context: Context) -> Message:
    """After the last round: forecast with the final model and send encrypted network totals."""
    session, weights, settings = _with_global_model(msg, context, "the network forecast")
    run = context.run_id
    try:
        vec, dates, series = session.network_totals(settings, weights)
    except NetworkError as exc:
        say(context, f"run {run}: network forecast refused: {exc}")
        raise
    start, end = (pd.Timestamp(d).date().isoformat() for d in (dates[0], dates[-1]))
    model = journal.model_fingerprint(weights)
    journal.record(
        session.cfg,
        "forecast",
        run=run,
        round=settings.server_round,
        model=model,
        start=start,
        end=end,
        periods=len(dates),
        series=series,
        bytes=_sent(vec),
    )
    say(
        context,
        f"run {run}: forecast {start}..{end} with model {model}; encrypted totals sent, {_sent(vec)} bytes",
    )
    iso = ",".join(pd.Timestamp(d).date().isoformat() for d in dates)
    return _reply(msg, session, NETWORK, vec, **{"network-dates": iso})


# ---- the cross-site profile, before round 1 (common/denoise.py) ---------------------------------
def _profile_step(msg: Message, context: Context, step: str, work) -> Message:
    session = _session(msg, context)
    settings = round_settings(msg.content[CONFIG])
    try:
        return work(session, settings)
    except DenoiseError as exc:
        say(context, f"run {context.run_id}: cross-site profile, {step} refused: {exc}")
        raise


@app.query("profile_site_groups")
def profile_site_groups(msg: Message, context: Context) -> Message:
    """Which shared groups this site holds (encrypted 0/1 per group)."""

    def work(session: NodeSession, s: RoundSettings) -> Message:
        vec, end = session.profile_site_groups(s)
        return _reply(msg, session, SITE_GROUPS, vec, **{"profile-end": end})

    return _profile_step(msg, context, "groups", work)


@app.query("profile_moments")
def profile_moments(msg: Message, context: Context) -> Message:
    """This site's second moments of the groups enough sites hold (encrypted)."""

    def work(session: NodeSession, s: RoundSettings) -> Message:
        vec, end = session.profile_moments(s, read_encrypted(msg.content[GLOBAL], SITE_GROUPS))
        say(context, f"run {context.run_id}: cross-site profile, moments sent, {_sent(vec) / 1e6:.2f} MB")
        return _reply(msg, session, MOMENTS, vec, **{"profile-end": end})

    return _profile_step(msg, context, "moments", work)


@app.query("profile_adopt")
def profile_adopt(msg: Message, context: Context) -> Message:
    """Decrypt the network's summed moments and keep their shapes (NODE/private)."""

    def work(session: NodeSession, s: RoundSettings) -> Message:
        profile = session.adopt_profile(s, read_encrypted(msg.content[GLOBAL], MOMENTS), s.denoise_id)
        shared = int((profile.sites > 0).sum())
        say(context, f"run {context.run_id}: cross-site profile {s.denoise_id} kept, {shared} groups shared")
        config = ConfigRecord({"fingerprint": session.key.fingerprint, "denoise-id": s.denoise_id})
        return Message(RecordDict({CONFIG: config}), reply_to=msg)

    return _profile_step(msg, context, "adopting it", work)
