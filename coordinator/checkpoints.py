"""The run folder the coordinator writes: encrypted sums per round, and the run's record.

Every round's summed global state and summed hold-out sums are kept as ciphertexts
(``round_NNNN.state.ckks``, ``round_NNNN.eval_metrics.ckks``), so a restarted coordinator resumes
from the newest intact state and the sites can be asked again for what they have not opened.
``progress.json`` records each step of the run (replies, refusals, the sites' decisions and what
they opened); the planner reads only this folder (coordinator/planner/runs.py).
"""

from __future__ import annotations

import json
import time
from logging import WARNING
from pathlib import Path

from flwr.app import ArrayRecord
from flwr.common.logger import log

from common import crypto
from common.codec import STATE, encrypted_record
from common.files import round_file, round_files, write_bytes_atomic

PROGRESS_FILE = "progress.json"
NETWORK_FILE, NETWORK_META = "network.ckks", "network.json"
PROFILE_FILE, PROFILE_META = "profile.ckks", "profile.json"  # the summed moments, never decrypted here
STATE_SUFFIX = ".state.ckks"


def checkpoint_file(folder: Path, server_round: int, name: str) -> Path:
    """A round's encrypted sum in the run folder: ``state`` (the global model), ``eval_metrics``."""
    return round_file(folder, server_round, f".{name}.ckks")


def latest_checkpoint(checkpoint_dir: Path) -> tuple[int, Path] | None:
    """The newest round whose encrypted global state is intact; torn files are reported and skipped.

    Writes are atomic (temp file + rename), so a torn checkpoint means damage after the fact (a
    copied or truncated file); resuming from it would corrupt every later round."""
    for server_round, path in sorted(round_files(checkpoint_dir, STATE_SUFFIX).items(), reverse=True):
        try:
            crypto.EncryptedVector.from_bytes(path.read_bytes())
        except crypto.CryptoError as exc:
            log(WARNING, "checkpoint %s is torn (%s): skipped", path.name, exc)
            continue
        return server_round, path
    return None


def load_state(key: crypto.KeyContext, path: Path) -> ArrayRecord:
    vec = crypto.EncryptedVector.from_bytes(path.read_bytes())
    if vec.fingerprint != key.fingerprint:
        raise crypto.KeyMismatchError(f"checkpoint {path} was made under key {vec.fingerprint}")
    return encrypted_record(**{STATE: vec})


def read_sum(folder: Path, server_round: int, name: str) -> crypto.EncryptedVector:
    return crypto.EncryptedVector.from_bytes(checkpoint_file(folder, server_round, name).read_bytes())


class RunRecord:
    """The run folder: its checkpoints and ``progress.json``, rewritten whole at every event."""

    def __init__(self, folder: Path, fingerprint: str, run_token: str = "") -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.run_token = run_token  # the coordinator's name for the run: keys the sites' server state
        self.history: list[dict] = []
        self.planned_rounds: int | None = None  # shown by `fedstock-planner status`
        self.privacy: dict | None = None  # (ε, δ) of the run when its updates are differentially private
        self.outcome: dict = {}  # the run's stop: round, best round, reason (coordinator/rounds.py)
        self.applied: dict[int, int] = {}  # node -> newest aggregate round it reported applied

    @property
    def last_round(self) -> int | None:
        return max((h["round"] for h in self.history), default=None)

    def write(self, name: str, blob: bytes) -> None:
        write_bytes_atomic(self.folder / name, blob)  # a crash never leaves a half-written file

    def write_json(self, name: str, body: dict) -> None:
        self.write(name, (json.dumps(body, indent=2) + "\n").encode())

    def keep_sum(self, server_round: int, name: str, vec: crypto.EncryptedVector) -> None:
        write_bytes_atomic(checkpoint_file(self.folder, server_round, name), vec.to_bytes())

    def step(self, server_round: int, phase: str, nodes: list[int], refused: list[str]) -> None:
        """One step of the run: which nodes' replies it used, and the refusals."""
        entry = {"round": server_round, "phase": phase, "replies": len(nodes), "refused": refused}
        self.record(entry | {"nodes": nodes, "time": time.time()})

    def record(self, entry: dict) -> None:
        """Add one event of the run to progress.json."""
        self.history.append(entry)
        body = {
            "fingerprint": self.fingerprint,
            "last_round": entry["round"],
            "planned_rounds": self.planned_rounds,
            "history": self.history,
        }
        if self.privacy is not None:
            body["privacy"] = self.privacy
        if self.outcome:
            body["outcome"] = self.outcome
        body["run_token"], body["applied"] = self.run_token, {str(n): r for n, r in self.applied.items()}
        self.write_json(PROGRESS_FILE, body)

    def resume_after(self, done: int) -> None:
        """Continue after ``done`` rounds: keep their history, drop anything logged past them."""
        path = self.folder / PROGRESS_FILE
        old = json.loads(path.read_text()) if path.is_file() else {}
        self.history = [h for h in old.get("history", []) if h["round"] <= done]
        self.run_token = old.get("run_token") or self.run_token  # the sites' server state is keyed by it
        self.applied = {int(n): min(int(r), done) for n, r in old.get("applied", {}).items()}
        outcome = old.get("outcome", {})
        self.outcome = outcome if outcome.get("round", done + 1) <= done else {}
