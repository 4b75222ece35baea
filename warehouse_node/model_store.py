"""The global models a node keeps (NODE/private): the one it forecasts with, and the latest
round's candidate until the federation's summed scores rank it (warehouse_node/node.py)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import torch

from common.config import ConfigError, NodeConfig
from common.files import owner_only
from common.model import build_model, load_vector
from common.settings import ModelConfig

MODEL_FILE = "global_model.pt"  # the global model this node forecasts with
CANDIDATE_FILE = "candidate_model.pt"  # the last round's, until the federation's scores rank it


def save_global_model(
    cfg: NodeConfig,
    vector: np.ndarray,
    m: ModelConfig,
    server_round: int,
    name: str = MODEL_FILE,
    key_fingerprint: str = "",
) -> Path:
    """Keep a decrypted global model, with the key it was decrypted under ("" where no key was
    used: the simulation's plaintext modes) and when it was kept (warehouse_node/fallback.py)."""
    path = cfg.private_dir / name
    with owner_only(cfg.private_dir):
        torch.save(
            {
                "vector": torch.from_numpy(np.asarray(vector, dtype=np.float32)),
                "model_config": m.to_dict(),
                "round": server_round,
                "fingerprint": key_fingerprint,
                "saved_at": time.time(),
            },
            path,
        )
    return path


def model_facts(cfg: NodeConfig) -> dict | None:
    """Round, key fingerprint, time kept and weights of the model this node forecasts with; None
    without one. An unreadable file is an error (``load_global_model`` names it)."""
    path = cfg.private_dir / MODEL_FILE
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        return {
            "round": int(blob["round"]),
            "fingerprint": str(blob.get("fingerprint", "")),
            "saved_at": float(blob.get("saved_at", path.stat().st_mtime)),
            "horizon": int(blob["model_config"]["horizon"]),
            "vector": blob["vector"].numpy(),
        }
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not a readable global model ({type(exc).__name__}): the node writes it again "
            "when it next takes part in a round"
        ) from None


def keep_candidate(cfg: NodeConfig, server_round: int) -> bool:
    """Forecast from now on with the candidate model of ``server_round`` (the federation's best so
    far); False when this node holds no candidate of that round (it missed the round's evaluation)."""
    path = cfg.private_dir / CANDIDATE_FILE
    try:
        held = int(torch.load(path, weights_only=True)["round"])
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValueError):
        return False
    if held != server_round:
        return False
    path.replace(cfg.private_dir / MODEL_FILE)
    return True


def saved_model_vector(cfg: NodeConfig) -> tuple[int, np.ndarray] | None:
    """(round, weights) of the global model this node forecasts with; None without a readable one."""
    try:
        blob = torch.load(cfg.private_dir / MODEL_FILE, weights_only=True)
        return int(blob["round"]), blob["vector"].numpy()
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValueError):
        return None


def load_global_model(cfg: NodeConfig):
    path = cfg.private_dir / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this node has not received a global model yet")
    try:
        blob = torch.load(path, weights_only=True)
        m = ModelConfig(**{**blob["model_config"], "quantiles": tuple(blob["model_config"]["quantiles"])})
        model = build_model(m, 0)
        load_vector(model, blob["vector"].numpy())
        return model, m, int(blob["round"])
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not a readable global model ({type(exc).__name__}): the node writes it again "
            "when it next takes part in a round"
        ) from None
