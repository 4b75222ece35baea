"""Warehouse node ClientApp: the message edge of a warehouse node (warehouse_node/node.py).

Each handler decrypts what the message carries, asks the node (plain arrays, no key) for its part,
and encrypts the reply (common/codec.py); in plaintext a reply carries only the key's fingerprint,
digests and the node's decisions. Node config (``flower-supernode --node-config``): ``node-dir``
(folder with node.toml), optionally ``data`` (raw data file) and ``keys`` (folder with secret.ctx)
overriding node.toml, and ``torch-threads``. Each step prints one ``fedstock-node |`` line, which
``fedstock-node join`` shows (``quiet=true`` in the node config, as in-process runs set it).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from common import codec, crypto
from common.codec import CONFIG, GLOBAL, METRICS, MOMENTS, NETWORK, SCORES, SITE_GROUPS, STATE, UPDATE
from common.config import NodeConfig, load_node_config, with_site_files
from common.denoise import DenoiseError
from common.network import NetworkError
from common.settings import SettingsError
from warehouse_node import journal, published
from warehouse_node.federated import RoundSettings, UpdateRefused
from warehouse_node.model_store import saved_model_vector
from warehouse_node.node import Node
from warehouse_node.server_state import StateBehind, latest_round

Handler = Callable[[Message, Context], Message]

app = ClientApp()
LOG_PREFIX = "fedstock-node | "
# Refusals of the protocol itself: their messages name keys, counts and settings, never the site's data
PROTOCOL_REFUSALS = (
    crypto.CryptoError,
    DenoiseError,
    NetworkError,
    SettingsError,
    StateBehind,
    UpdateRefused,
)


class SiteError(RuntimeError):
    """What the coordinator is told of a failure at a site: its kind and step, no content."""


def guarded(step: str) -> Callable[[Handler], Handler]:
    """An error in ``step`` reaches the coordinator as its kind only (Flower sends the message of
    whatever a ClientApp raises): a data error's message may hold a cell or a file name. The site's
    own log line keeps the whole message."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(msg: Message, context: Context) -> Message:
            try:
                return handler(msg, context)
            except PROTOCOL_REFUSALS:
                raise
            except Exception as exc:
                say(
                    context,
                    f"run {context.run_id}: {step} failed: {type(exc).__name__}: {exc}".splitlines()[0],
                )
                raise SiteError(
                    f"{type(exc).__name__} at this site during {step}; the site's own log says why"
                ) from None

        return run

    return wrap


def say(context: Context, line: str) -> None:
    if not context.node_config.get("quiet", False):
        print(LOG_PREFIX + line, flush=True)


def node_config(context: Context) -> NodeConfig:
    nc = context.node_config
    keys = str(nc.get("keys", ""))
    secret = f"{keys}/{crypto.SECRET_CONTEXT_FILE}" if keys else None
    return with_site_files(load_node_config(str(nc["node-dir"])), str(nc.get("data", "")), secret)


def _open(msg: Message, context: Context) -> tuple[Node, crypto.KeyContext, RoundSettings]:
    """The node, its secret key (checked against the one the coordinator announces) and the
    round's settings from the message."""
    threads = int(context.node_config.get("torch-threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    cfg = node_config(context)
    key = crypto.load_context(cfg.secret_context, cfg.key_fingerprint)
    if not key.has_secret_key:
        raise crypto.CryptoError(f"{cfg.secret_context} holds no secret key: a node needs one")
    announced = str(msg.content[CONFIG].get("fingerprint", ""))
    if announced != key.fingerprint:
        say(context, f"refused: the coordinator announces key {announced or '(none)'}")
        raise crypto.KeyMismatchError(
            f"coordinator announces key {announced or '(none)'}, this node holds {key.fingerprint}"
        )
    return Node(cfg), key, RoundSettings.of(msg.content[CONFIG])


def _global_weights(node: Node, key: crypto.KeyContext, msg: Message, s: RoundSettings) -> np.ndarray | None:
    """The global model the message carries (the aggregate of round ``s.global_round``, and any
    earlier aggregates this site missed, named ``state-NNNN``); None in round 1."""
    if GLOBAL not in msg.content.array_records or STATE not in msg.content[GLOBAL]:
        return None  # first round: every node starts from the same seeded model
    record = msg.content[GLOBAL]
    names = {s.global_round: STATE} | {
        int(n.split("-", 1)[1]): n for n in record if n.startswith(f"{STATE}-")
    }
    fetch: dict[int, Callable[[], np.ndarray]] = {
        r: (lambda n=n: codec.decode_global(key, codec.read_encrypted(record, n))) for r, n in names.items()
    }
    return node.global_model(s, fetch)


def _with_global_model(msg: Message, context: Context, step: str):
    node, key, s = _open(msg, context)
    weights = _global_weights(node, key, msg, s)
    if weights is None:
        raise ValueError(f"{step} needs the global model, none was sent")
    return node, key, s, weights


def _reply(
    msg: Message,
    node: Node,
    key: crypto.KeyContext,
    name: str,
    vec: crypto.EncryptedVector,
    s: RoundSettings,
    **extra,
) -> Message:
    """The encrypted reply; in plaintext only the key's fingerprint, the model's fingerprint (a
    digest: sites on the same model show the same one) and, with a server optimizer, the newest
    aggregate this site has applied (so the coordinator resends what it missed)."""
    config = ConfigRecord({"fingerprint": key.fingerprint, **extra})
    if s.optimizer.stateful and s.run_token:
        config["applied-round"] = latest_round(node.cfg, s.run_token)
    return Message(RecordDict({UPDATE: codec.encrypted_record(**{name: vec}), CONFIG: config}), reply_to=msg)


def _plain_reply(msg: Message, key: crypto.KeyContext, **values) -> Message:
    return Message(
        RecordDict({CONFIG: ConfigRecord({"fingerprint": key.fingerprint, **values})}), reply_to=msg
    )


def _sent(vec: crypto.EncryptedVector) -> int:
    return sum(len(c) for c in vec.chunks)


@app.train()
@guarded("training")
def train(msg: Message, context: Context) -> Message:
    node, key, s = _open(msg, context)
    run, rnd = context.run_id, s.server_round
    say(context, f"run {run} round {rnd}: joined ({s.nodes} sites), training {s.train.epochs} epochs")
    weights = _global_weights(node, key, msg, s)

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        say(context, f"run {run} round {rnd}: epoch {epoch}/{epochs}, pinball loss {loss:.4f}")

    update = node.train(s, weights, on_epoch)
    state = codec.encode_update(key, update.weights, update.weight, update.loss, s.nodes)
    model = journal.model_fingerprint(update.start)
    journal.record(node.cfg, "train", run=run, round=rnd, start_model=model, bytes=_sent(state))
    say(context, f"run {run} round {rnd}: update sent, {_sent(state) / 1e6:.2f} MB encrypted")
    return _reply(msg, node, key, STATE, state, s, **{"start-model": model})


@app.evaluate()
@guarded("evaluation")
def evaluate(msg: Message, context: Context) -> Message:
    """Keep the round's global model and reply with this site's encrypted hold-out sums of it."""
    node, key, s, weights = _with_global_model(msg, context, "evaluate")
    run, rnd = context.run_id, s.server_round
    node.keep_global_model(s, weights, key.fingerprint)
    metrics = codec.encode_scores(key, node.score(s, weights, run), s.nodes)
    model = journal.model_fingerprint(weights)
    journal.record(node.cfg, "evaluate", run=run, round=rnd, model=model, bytes=_sent(metrics))
    say(context, f"run {run} round {rnd}: global model {model} decrypted and scored, encrypted scores sent")
    return _reply(msg, node, key, METRICS, metrics, s, model=model)


@app.query("decide")
@guarded("the stopping decision")
def decide(msg: Message, context: Context) -> Message:
    """Decrypt the summed hold-out scores of every round so far, apply the run's stopping rule
    and keep the best round's model; reply with the decision only (never a score)."""
    node, key, s = _open(msg, context)
    record = msg.content[GLOBAL]
    names = sorted(n for n in record if n.startswith(f"{SCORES}-"))
    decision = node.decide(s, [codec.decode_scores(key, codec.read_encrypted(record, n)) for n in names])
    run, rnd = context.run_id, s.server_round
    kept = saved_model_vector(node.cfg)
    model = journal.model_fingerprint(kept[1]) if kept else "-"
    journal.record(node.cfg, "decide", run=run, round=rnd, kept_model=model, **decision.as_config())
    say(context, f"run {run} round {rnd}: {decision.action} ({decision.reason}); forecasting model {model}")
    return _plain_reply(msg, key, **decision.as_config())


@app.query("publish")
@guarded("opening a sum")
def publish(msg: Message, context: Context) -> Message:
    """Open a sum the planner may see (warehouse_node/published.py checks its kind and how many
    sites it counts) and reply with its plaintext; any other vector is refused."""
    node, key, s = _open(msg, context)
    kind = str(msg.content[CONFIG].get("publish-kind", ""))
    try:
        vec = codec.read_encrypted(msg.content[GLOBAL], kind)
        minimum = s.network_min_sites if kind == published.NETWORK_TOTALS else s.publish_min_sites
        network = s.network if node.cfg.share_network else None
        values, sites = published.open_sum(key, kind, vec, minimum, network)
        digest = hashlib.sha256(vec.to_bytes()).hexdigest()[:32]
        published.check_first_opening(node.cfg, s.run_token, kind, s.server_round, digest)
    except crypto.CryptoError as exc:
        say(context, f"run {context.run_id}: refused to open a {kind or 'nameless'} sum: {exc}")
        raise
    run, rnd = context.run_id, s.server_round
    journal.record(node.cfg, "publish", run=run, round=rnd, opened=kind, sites=sites)
    say(context, f"run {run} round {rnd}: opened the {kind} sum of {sites} sites")
    return _plain_reply(msg, key, **{"publish-kind": kind, "values": values})


@app.query()
@guarded("the network forecast")
def network_totals(msg: Message, context: Context) -> Message:
    """After the last round: forecast with the final model and send encrypted network totals."""
    node, key, s, weights = _with_global_model(msg, context, "the network forecast")
    run = context.run_id
    try:
        values, dates, series = node.network_cells(s, weights, key.fingerprint)
        vec = codec.encode_totals(key, values, s.nodes)
    except NetworkError as exc:
        say(context, f"run {run}: network forecast refused: {exc}")
        raise
    start, end = (pd.Timestamp(d).date().isoformat() for d in (dates[0], dates[-1]))
    model = journal.model_fingerprint(weights)
    journal.record(
        node.cfg,
        "forecast",
        run=run,
        round=s.server_round,
        forecast_model=model,  # the run's best round's, not the last round's (``last_model``)
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
    return _reply(msg, node, key, NETWORK, vec, s, **{"network-dates": iso})


# ---- the cross-site profile, before round 1 (common/denoise.py) ---------------------------------
def _profile_step(msg: Message, context: Context, step: str, work) -> Message:
    node, key, s = _open(msg, context)
    try:
        return work(node, key, s)
    except DenoiseError as exc:
        say(context, f"run {context.run_id}: cross-site profile, {step} refused: {exc}")
        raise


@app.query("profile_site_groups")
@guarded("the cross-site profile")
def profile_site_groups(msg: Message, context: Context) -> Message:
    """Which shared groups this site holds (encrypted 0/1 per group)."""

    def work(node: Node, key: crypto.KeyContext, s: RoundSettings) -> Message:
        held, end = node.profile_site_groups(s)
        vec = codec.encode(key, SITE_GROUPS, held, s.nodes)
        return _reply(msg, node, key, SITE_GROUPS, vec, s, **{"profile-end": end})

    return _profile_step(msg, context, "groups", work)


@app.query("profile_moments")
@guarded("the cross-site profile")
def profile_moments(msg: Message, context: Context) -> Message:
    """This site's second moments of the groups enough sites hold (encrypted)."""

    def work(node: Node, key: crypto.KeyContext, s: RoundSettings) -> Message:
        counts = crypto.decrypt(key, codec.read_encrypted(msg.content[GLOBAL], SITE_GROUPS))
        moments, end = node.profile_moments(s, counts)
        vec = codec.encode(key, MOMENTS, moments, s.nodes)
        say(context, f"run {context.run_id}: cross-site profile, moments sent, {_sent(vec) / 1e6:.2f} MB")
        return _reply(msg, node, key, MOMENTS, vec, s, **{"profile-end": end})

    return _profile_step(msg, context, "moments", work)


@app.query("profile_adopt")
@guarded("the cross-site profile")
def profile_adopt(msg: Message, context: Context) -> Message:
    """Decrypt the network's summed moments and keep their shapes (NODE/private)."""

    def work(node: Node, key: crypto.KeyContext, s: RoundSettings) -> Message:
        summed = crypto.decrypt(key, codec.read_encrypted(msg.content[GLOBAL], MOMENTS))
        profile = node.adopt_profile(s, summed, s.denoise_id)
        shared = int((profile.sites > 0).sum())
        say(context, f"run {context.run_id}: cross-site profile {s.denoise_id} kept, {shared} groups shared")
        return _plain_reply(msg, key, **{"denoise-id": s.denoise_id})

    return _profile_step(msg, context, "adopting it", work)
