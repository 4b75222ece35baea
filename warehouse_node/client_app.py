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
    SCORES,
    SITE_GROUPS,
    STATE,
    UPDATE,
    encrypted_record,
    read_encrypted,
)
from warehouse_node import journal
from warehouse_node.federated import NodeSession, RoundSettings, round_settings
from warehouse_node.pipeline import saved_model_vector
from warehouse_node.server_state import latest_round

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


def _global_weights(session: NodeSession, msg: Message, s: RoundSettings) -> np.ndarray | None:
    """The global model the message carries (the aggregate of round ``s.global_round``, and any
    earlier aggregates this site missed, named ``state-NNNN``); None in round 1."""
    if GLOBAL not in msg.content.array_records or STATE not in msg.content[GLOBAL]:
        return None  # first round: every node starts from the same seeded model
    record = msg.content[GLOBAL]
    aggregates = {s.global_round: read_encrypted(record, STATE)}
    for name in record:
        if name.startswith(f"{STATE}-"):
            aggregates[int(name.split("-", 1)[1])] = read_encrypted(record, name)
    return session.global_model(s, aggregates)


def _reply(
    msg: Message, session: NodeSession, name: str, vec: crypto.EncryptedVector, s: RoundSettings, **extra
) -> Message:
    """The encrypted reply; in plaintext only the key's fingerprint, the model's fingerprint (a
    digest: sites on the same model show the same one) and, with a server optimizer, the newest
    aggregate this site has applied (so the coordinator resends what it missed)."""
    config = ConfigRecord({"fingerprint": session.key.fingerprint, **extra})
    if s.optimizer.stateful and s.run_token:
        config["applied-round"] = latest_round(session.cfg, s.run_token)
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
    weights = _global_weights(session, msg, settings)

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        say(context, f"run {run} round {rnd}: epoch {epoch}/{epochs}, pinball loss {loss:.4f}")

    state, start = session.train(settings, weights, on_epoch)
    model = journal.model_fingerprint(start)
    journal.record(session.cfg, "train", run=run, round=rnd, start_model=model, bytes=_sent(state))
    say(context, f"run {run} round {rnd}: update sent, {_sent(state) / 1e6:.2f} MB encrypted")
    return _reply(msg, session, STATE, state, settings, **{"start-model": model})


def _with_global_model(
    msg: Message, context: Context, step: str
) -> tuple[NodeSession, np.ndarray, RoundSettings]:
    session = _session(msg, context)
    settings = round_settings(msg.content[CONFIG])
    weights = _global_weights(session, msg, settings)
    if weights is None:
        raise ValueError(f"{step} needs the global model, none was sent")
    return session, weights, settings


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    session, weights, settings = _with_global_model(msg, context, "evaluate")
    run, rnd = context.run_id, settings.server_round
    metrics = session.evaluate(settings, weights, run)
    model = journal.model_fingerprint(weights)
    journal.record(session.cfg, "evaluate", run=run, round=rnd, model=model, bytes=_sent(metrics))
    say(context, f"run {run} round {rnd}: global model {model} decrypted and scored, encrypted scores sent")
    return _reply(msg, session, METRICS, metrics, settings, model=model)


@app.query("decide")
def decide(msg: Message, context: Context) -> Message:
    """Decrypt the summed hold-out scores of every round so far, apply the run's stopping rule
    and keep the best round's model; reply with the decision only (never a score)."""
    session = _session(msg, context)
    settings = round_settings(msg.content[CONFIG])
    record = msg.content[GLOBAL]
    names = sorted(n for n in record if n.startswith(f"{SCORES}-"))
    decision = session.decide(settings, [read_encrypted(record, n) for n in names])
    run, rnd = context.run_id, settings.server_round
    kept = saved_model_vector(session.cfg)
    model = journal.model_fingerprint(kept[1]) if kept else "-"
    journal.record(session.cfg, "decide", run=run, round=rnd, kept_model=model, **decision.as_config())
    say(context, f"run {run} round {rnd}: {decision.action} ({decision.reason}); forecasting model {model}")
    config = ConfigRecord({"fingerprint": session.key.fingerprint, **decision.as_config()})
    return Message(RecordDict({CONFIG: config}), reply_to=msg)


@app.query("publish")
def publish(msg: Message, context: Context) -> Message:
    """Open a sum the planner may see (warehouse_node/published.py checks its kind and how many
    sites it counts) and reply with its plaintext; any other vector is refused."""
    session = _session(msg, context)
    settings = round_settings(msg.content[CONFIG])
    kind = str(msg.content[CONFIG].get("publish-kind", ""))
    try:
        values, sites = session.open_published(settings, kind, read_encrypted(msg.content[GLOBAL], kind))
    except crypto.CryptoError as exc:
        say(context, f"run {context.run_id}: refused to open a {kind or 'nameless'} sum: {exc}")
        raise
    run, rnd = context.run_id, settings.server_round
    journal.record(session.cfg, "publish", run=run, round=rnd, opened=kind, sites=sites)
    say(context, f"run {run} round {rnd}: opened the {kind} sum of {sites} sites")
    config = ConfigRecord({"fingerprint": session.key.fingerprint, "publish-kind": kind, "values": values})
    return Message(RecordDict({CONFIG: config}), reply_to=msg)


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
    return _reply(msg, session, NETWORK, vec, settings, **{"network-dates": iso})


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
        return _reply(msg, session, SITE_GROUPS, vec, s, **{"profile-end": end})

    return _profile_step(msg, context, "groups", work)


@app.query("profile_moments")
def profile_moments(msg: Message, context: Context) -> Message:
    """This site's second moments of the groups enough sites hold (encrypted)."""

    def work(session: NodeSession, s: RoundSettings) -> Message:
        vec, end = session.profile_moments(s, read_encrypted(msg.content[GLOBAL], SITE_GROUPS))
        say(context, f"run {context.run_id}: cross-site profile, moments sent, {_sent(vec) / 1e6:.2f} MB")
        return _reply(msg, session, MOMENTS, vec, s, **{"profile-end": end})

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
