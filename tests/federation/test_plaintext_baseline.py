"""The plaintext baseline of scripts/benchmark_he.py trains the same model as the encrypted apps,
so the round-time ratio it reports compares like with like: only the encryption differs."""

import numpy as np
import torch

from coordinator.planner.inprocess import run_inprocess
from coordinator.server_app import app as server_app
from scripts import plaintext_fedavg
from tests.conftest import run_config
from warehouse_node.client_app import app as client_app
from warehouse_node.model_store import MODEL_FILE


def _global_models(dirs) -> list[np.ndarray]:
    return [torch.load(d / "private" / MODEL_FILE, weights_only=False)["vector"].numpy() for d in dirs]


def test_plain_flower_fedavg_baseline_reaches_the_encrypted_federations_model(nodes, keys, tmp_path):
    dirs, _ = nodes
    run_inprocess(server_app, client_app, dirs, run_config(keys, tmp_path / "ckks"))
    encrypted = _global_models(dirs)
    plain_rc = run_config(keys, tmp_path / "plain")
    run_inprocess(plaintext_fedavg.server, plaintext_fedavg.client, dirs, plain_rc)
    plain = _global_models(dirs)
    assert all(np.array_equal(encrypted[0], m) for m in encrypted)  # one global model for all nodes
    rel = np.abs(plain[0] - encrypted[0]).max() / np.abs(encrypted[0]).max()
    assert rel < 1e-4, rel
    assert not np.allclose(plain[0], 0)
