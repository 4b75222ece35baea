"""Measurements behind scripts/benchmark_he.py (one function per table).

Run as ``python scripts/he_measure.py JSON`` it is the coordinator probe: a fresh process that holds
N update blobs (as Flower holds the replies of a round) and streams their homomorphic sum, while a
thread samples its resident memory.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import crypto  # noqa: E402
from common.codec import STATE_TAIL, WEIGHT_UNIT  # noqa: E402

MODELS = {"project": 32, "1M": 184}  # hidden size; lookback/horizon/heads as the Walmart preset
# Distinct encrypted updates; larger counts reuse them (the sum's cost does not depend on values).
DISTINCT = 10


def model_config(name: str):
    from common.model import ModelConfig

    return ModelConfig(
        lookback=26, horizon=13, hidden=MODELS[name], heads=4, anchor="seasonal", season_blend=0.0
    )


def model_weights(name: str) -> np.ndarray:
    from common.model import build_model, model_vector

    return model_vector(build_model(model_config(name), 0))


def _median(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# ---- 1. parameters -----------------------------------------------------------------------------
def _fedavg_error(sk, pk, base: np.ndarray, windows: np.ndarray, rng) -> float:
    from common.codec import encode_update, global_weights

    weights = [base + rng.standard_t(5, base.size) * 0.35 for _ in windows]
    total = crypto.RunningSum(pk, base.size + len(STATE_TAIL))
    for w, n in zip(weights, windows, strict=True):
        total.add(encode_update(sk, w, n / WEIGHT_UNIT, 0.3, addends=100))
    encrypted = global_weights(crypto.decrypt(sk, total.result()))
    plain = sum(n * w for n, w in zip(windows, weights, strict=True)) / windows.sum()
    return float(np.abs(encrypted - plain).max() / np.abs(plain).max())


def parameter_sweep(primes: list[int], work: Path) -> list[dict]:
    """Bytes and FedAvg precision per data-prime size, at scale 2^(q-21) (sums may reach 2^19)."""
    base, rows = model_weights("project"), []
    for q in primes:
        crypto.keygen(work / str(q), coeff_mod_bit_sizes=(q, 20), scale_bits=q - 21)
        sk = crypto.load_context(work / str(q) / crypto.SECRET_CONTEXT_FILE)
        pk = crypto.load_context(work / str(q) / crypto.PUBLIC_CONTEXT_FILE)
        rng = np.random.default_rng(5)  # Walmart-like, store_item-like and small sites
        windows = np.concatenate(
            [rng.integers(6000, 6900, 45), np.full(10, 76_450), np.round(10 ** rng.uniform(2, 5, 45))]
        )
        full = crypto.encrypt(sk, base[: sk.slot_count])
        rows.append(
            {
                "data_prime_bits": q,
                "scale_bits": q - 21,
                "bytes_per_value_vs_float32": round(len(full.chunks[0]) / (sk.slot_count * 4), 3),
                "rel_err_100_nodes": _fedavg_error(sk, pk, base, windows, rng),
                "rel_err_2_small_nodes": _fedavg_error(sk, pk, base, np.array([100, 100]), rng),
                "public_context_kb": round((work / str(q) / crypto.PUBLIC_CONTEXT_FILE).stat().st_size / 1e3),
                "chosen": "yes" if q == crypto.DEFAULT_COEFF_BITS[0] else "",
            }
        )
    return rows


# ---- 2. one update -------------------------------------------------------------------------------
def _record_bytes(content) -> int:
    from flwr.common.serde import recorddict_to_proto

    return recorddict_to_proto(content).ByteSize()


def update_costs(key_dir: Path, repeats: int) -> list[dict]:
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    from common.codec import CONFIG, STATE, UPDATE, encode_update, encrypted_record, global_weights

    key = crypto.load_context(key_dir / crypto.SECRET_CONTEXT_FILE)
    rows = []
    for name in MODELS:
        w = model_weights(name)
        enc_s, vec = _median(lambda w=w: encode_update(key, w, 6.6, 0.3, addends=100), repeats)
        dec_s, _ = _median(lambda vec=vec: global_weights(crypto.decrypt(key, vec)), repeats)
        encrypted = RecordDict(
            {UPDATE: encrypted_record(**{STATE: vec}), CONFIG: ConfigRecord({"fingerprint": key.fingerprint})}
        )
        plain = RecordDict(
            {
                "arrays": ArrayRecord([w.astype(np.float32)]),
                "metrics": MetricRecord({"num-examples": 6760, "train-pinball": 0.3}),
            }
        )
        rows.append(
            {
                "model": name,
                "parameters": w.size,
                "float32_kb": round(4 * w.size / 1e3, 1),
                "encrypted_kb": round(len(vec.to_bytes()) / 1e3, 1),
                "bytes_ratio": round(len(vec.to_bytes()) / (4 * w.size), 3),
                "reply_msg_ratio": round(_record_bytes(encrypted) / _record_bytes(plain), 3),
                "encrypt_s": enc_s,
                "decrypt_s": dec_s,
            }
        )
    return rows


# ---- 3. the coordinator's sum ----------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def run_probe(args: dict) -> dict:
    key = crypto.load_context(args["public"])
    files = sorted(Path(args["dir"]).glob("*.ckks"))
    base = _rss_mb()
    blobs = [files[i % len(files)].read_bytes() for i in range(args["count"])]  # what Flower holds
    held, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def streamed_sum() -> None:
        total = crypto.RunningSum(key, args["length"])
        for blob in blobs:
            total.add(crypto.EncryptedVector.from_bytes(blob))
        total.result()

    times = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        streamed_sum()
        times.append(time.perf_counter() - t0)
    done.set()
    sampler.join()
    return {"times": times, "base_mb": base, "held_mb": held, "peak_mb": max(peak[0], held)}


def aggregation_probe(key_dir: Path, name: str, count: int, repeats: int, work: Path) -> dict:
    from common.codec import encode_update

    folder = work / name
    w = model_weights(name)
    if not folder.is_dir():
        folder.mkdir(parents=True)
        key = crypto.load_context(key_dir / crypto.SECRET_CONTEXT_FILE)
        rng = np.random.default_rng(1)
        for i in range(DISTINCT):
            vec = encode_update(key, w + rng.normal(0, 0.01, w.size), 6.6, 0.3, addends=100)
            (folder / f"{i:02d}.ckks").write_bytes(vec.to_bytes())
    args = {
        "public": str(key_dir / crypto.PUBLIC_CONTEXT_FILE),
        "dir": str(folder),
        "count": count,
        "length": w.size + len(STATE_TAIL),
        "repeats": repeats,
    }
    out = subprocess.run(
        [sys.executable, __file__, json.dumps(args)], capture_output=True, text=True, check=True
    ).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    median = statistics.median(probe["times"])
    return {
        "model": name,
        "updates": count,
        "median_s": round(median, 3),
        "ms_per_update": round(1e3 * median / count, 2),
        "peak_mb": round(probe["peak_mb"] - probe["held_mb"], 1),
        "held_replies_mb": round(probe["held_mb"] - probe["base_mb"], 1),
    }


if __name__ == "__main__":
    print(json.dumps(run_probe(json.loads(sys.argv[1]))))
