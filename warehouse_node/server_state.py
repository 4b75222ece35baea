"""This site's copy of the run's replicated server-optimizer state (common/server_optimizer.py).

One file per aggregate round under NODE/private/server_optimizer/RUN_TOKEN/: the global model
after that round's server step and the moments. Computing round r needs round r − 1's file; a
site that missed rounds gets the aggregates it lacks from the coordinator (which keeps them as
checkpoints) and replays them in order. The run token, chosen by the coordinator for each run,
keeps one run's states from ever being read by another.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from common.config import NodeConfig
from common.files import round_file, round_files
from common.server_optimizer import ServerOptimizer, ServerState, step

STATE_DIR = "server_optimizer"
_TOKEN = re.compile(r"^[0-9a-f]{8,64}$")


class StateBehind(ValueError):
    """This site lacks an aggregate it needs to replay the server steps."""


def run_folder(cfg: NodeConfig, token: str) -> Path:
    if not _TOKEN.match(token):
        raise ValueError(f"run token {token!r} is not a hex digest: the coordinator must announce one")
    return cfg.private_dir / STATE_DIR / token


def _path(folder: Path, r: int) -> Path:
    return round_file(folder, r, ".npz")


def latest_round(cfg: NodeConfig, token: str) -> int:
    """The newest aggregate round this site has applied in this run (0: none)."""
    folder = run_folder(cfg, token)
    return max(round_files(folder, ".npz"), default=0)


def forget_other_runs(cfg: NodeConfig, token: str) -> None:
    """A new run's first step: earlier runs' states are never read again."""
    base = cfg.private_dir / STATE_DIR
    for other in base.iterdir() if base.is_dir() else ():
        if other.name != token and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def state_after(
    cfg: NodeConfig,
    token: str,
    opt: ServerOptimizer,
    target: int,
    initial: Callable[[], np.ndarray],
    aggregates: Mapping[int, Callable[[], np.ndarray]],
) -> ServerState:
    """The server state after aggregate round ``target``, from this site's files and the
    ``aggregates`` it was sent (round → a call that decrypts that round's average of the trained
    models, made only when needed); new states are kept."""
    folder = run_folder(cfg, token)
    if target == 0:
        return ServerState.initial(initial())
    if _path(folder, target).is_file():
        return ServerState.load(_path(folder, target))
    have = max((r for r in range(target) if r == 0 or _path(folder, r).is_file()), default=0)
    missing = [r for r in range(have + 1, target + 1) if r not in aggregates]
    if missing:
        raise StateBehind(
            f"server-optimizer state: this site lacks the aggregate of round {missing[0]} "
            f"(it has applied round {have}); the coordinator resends what a site missed"
        )
    state = ServerState.load(_path(folder, have)) if have else ServerState.initial(initial())
    if have == 0:
        forget_other_runs(cfg, token)
    for r in range(have + 1, target + 1):
        state = step(opt, state, aggregates[r]())
        state.save(_path(folder, r))
    return state
