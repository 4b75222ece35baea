"""The plaintext baseline for scripts/benchmark_he.py: plain Flower FedAvg over the same node code.

Same data, model, seeds and training as the encrypted apps (``warehouse_node/client_app.py``,
``coordinator/server_app.py``); only the encryption is gone: nodes send float32 weights and plain
metrics, and Flower's own ``FedAvg`` averages them. Never deploy this: the coordinator reads every
node's model and sample count.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from common.config import NodeConfig, load_node_config
from common.model import build_model, model_vector
from common.settings import Settings
from warehouse_node.federated import RoundSettings, round_update
from warehouse_node.model_store import save_global_model
from warehouse_node.pipeline import NodeData, holdout_metrics

client = ClientApp()
server = ServerApp()


def _node(msg: Message, context: Context) -> tuple[NodeConfig, RoundSettings, NodeData, np.ndarray]:
    torch.set_num_threads(int(context.node_config.get("torch-threads", 1)))
    cfg = load_node_config(str(context.node_config["node-dir"]))
    s = RoundSettings.of(msg.content["config"])
    weights = np.concatenate([a.ravel() for a in msg.content["arrays"].to_numpy_ndarrays()])
    return cfg, s, NodeData.load(cfg, s.model.horizon, s.validation), weights.astype(np.float64)


@client.train()
def train(msg: Message, context: Context) -> Message:
    cfg, s, data, weights = _node(msg, context)
    _, new, n, loss = round_update(cfg, data, s, weights)
    reply = {
        "arrays": ArrayRecord([new.astype(np.float32)]),
        "metrics": MetricRecord({"num-examples": n, "train-pinball": loss}),
    }
    return Message(RecordDict(reply), reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, s, data, weights = _node(msg, context)
    save_global_model(cfg, weights, s.model, s.server_round)
    sums = holdout_metrics(data, s.model, weights, cfg.data.season)
    metrics = MetricRecord({"num-examples": int(sums["points"]), **{k: float(v) for k, v in sums.items()}})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    run = Settings.of(context.run_config)
    config = ConfigRecord(run.federation.record)
    start = RoundSettings.of({**config, "server-round": 1})
    initial = model_vector(build_model(start.model, start.round_seed)).astype(np.float32)
    nodes = run.min_nodes
    strategy = FedAvg(min_train_nodes=nodes, min_evaluate_nodes=nodes, min_available_nodes=nodes)
    strategy.start(
        grid,
        initial_arrays=ArrayRecord([initial]),
        num_rounds=run.rounds,
        train_config=config,
        evaluate_config=config,
    )
