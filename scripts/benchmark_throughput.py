"""Centralized training throughput (windows per second) of the Walmart model, CPU against GPU.

The windows are the ones ``fedstock-planner simulate --mode central`` trains on: the 45 Walmart
stores prepared through the node pipeline up to the accuracy benchmark's cutoff, pooled
(``coordinator.planner.reference_modes.pooled_windows``), with the Walmart preset's model. Each
timing is one call of ``common.training.train_local`` over ``--batches`` batches, as a training
round runs it: batches built from the windows on the CPU and copied to the device, loss and
optimizer on the device, model back on the CPU at the end. Devices and batch sizes take turns
within each repeat, so the ratios compare runs made side by side; one untimed warm-up call per
device and batch size comes first.

    .venv/bin/python scripts/benchmark_throughput.py                    # CPU, and CUDA when present
    .venv/bin/python scripts/benchmark_throughput.py --devices cpu,cuda  # fails without a GPU

A GPU machine without Flower or TenSEAL (which preparing the nodes needs) can time windows
prepared elsewhere: ``--save-windows FILE`` prepares them here and stops, ``--windows FILE`` times
them there with torch and numpy alone.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.evaluation import current_commit, write_marked_section
from common.model import ModelConfig, build_model
from common.training import TrainConfig, train_local, training_device
from common.windows import WindowSet

ROOT = Path(__file__).resolve().parents[1]
CUTOFF = "2012-04-27"  # the accuracy benchmark's: its 13 held-out weeks are not trained on


WINDOW_ARRAYS = ("past", "events", "target", "static_ids", "log_scale", "index")


def prepare_windows(data: str, seed: int) -> tuple[ModelConfig, TrainConfig, WindowSet, int]:
    """The pooled windows of ``simulate --mode central`` (needs Flower and TenSEAL: node keys)."""
    from coordinator.planner.reference_modes import pooled_windows
    from coordinator.planner.simulate import SimulationSettings, prepare_nodes

    with tempfile.TemporaryDirectory(prefix="fedstock-throughput-") as work:
        s = SimulationSettings("walmart", Path(data), mode="central", until=CUTOFF, seed=seed)
        nodes = prepare_nodes(s, Path(work), log)
        settings, pooled, _ = pooled_windows(nodes, s.run_config(Path(work)), log)
    return settings.model, settings.train, pooled, len(nodes)


def save_windows_to(path: Path, model: ModelConfig, train: TrainConfig, w: WindowSet, stores: int) -> None:
    meta = {"model": asdict(model), "train": asdict(train), "stores": stores, "commit": current_commit(ROOT)}
    meta |= {"series": w.series, "lookback": w.lookback, "horizon": w.horizon}
    with open(path, "wb") as out:  # a path, not a name: savez would add ".npz" to it
        np.savez_compressed(out, meta=np.array(json.dumps(meta)), **{k: getattr(w, k) for k in WINDOW_ARRAYS})


def load_windows(path: Path) -> tuple[ModelConfig, TrainConfig, WindowSet, int, str]:
    try:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            arrays = {k: saved[k] for k in WINDOW_ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise click.ClickException(f"--windows {path} is not a file of --save-windows: {detail}") from None
    train = TrainConfig(**{**meta["train"], "progress": tuple(meta["train"]["progress"])})
    windows = WindowSet(meta["series"], **arrays, lookback=meta["lookback"], horizon=meta["horizon"])
    return ModelConfig(**meta["model"]), train, windows, meta["stores"], meta["commit"]


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def time_training(
    model_cfg: ModelConfig, windows: WindowSet, train: TrainConfig, device: str, seed: int
) -> float:
    """Seconds for one ``train_local`` call on a fresh model (the model's copies to and from the
    device included: a node pays them every round)."""
    model = build_model(model_cfg, seed)
    started = time.perf_counter()
    train_local(model, windows, train, seed, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def hardware(devices: list[str]) -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    parts = [f"{os.cpu_count()} CPU cores ({cpu}), {torch.get_num_threads()} torch threads"]
    parts += [torch.cuda.get_device_name(torch.device(d)) for d in devices if d.startswith("cuda")]
    return ", ".join(parts) + f"; torch {torch.__version__}"


def table(seconds: dict[tuple[str, int], list[float]], windows_per_call: dict[int, int]) -> list[str]:
    lines = [
        "| device | batch size | windows/s, median (min..max) | ms per batch | × CPU (same batch size) |",
        "|---|---:|---:|---:|---:|",
    ]
    for (device, size), times in seconds.items():
        rates = [windows_per_call[size] / t for t in times]
        batches = -(-windows_per_call[size] // size)
        cpu = seconds.get(("cpu", size))
        ratio = (
            statistics.median(rates) / statistics.median(windows_per_call[size] / t for t in cpu)
            if cpu
            else None
        )
        lines.append(
            f"| {device} | {size} | {statistics.median(rates):,.0f} ({min(rates):,.0f}..{max(rates):,.0f}) "
            f"| {1000 * statistics.median(times) / batches:.1f} | {f'{ratio:.2f}' if ratio else '-'} |"
        )
    return lines


def default_devices() -> str:
    return "cpu,cuda" if torch.cuda.is_available() else "cpu"


@click.command()
@click.option("--data", default=str(ROOT.parent / "shared" / "data" / "walmart"), show_default=True)
@click.option("--devices", default=default_devices, show_default="cpu, and cuda when present")
@click.option("--batch-sizes", default="256,1024", show_default=True)
@click.option("--batches", default=20, show_default=True, type=click.IntRange(1), help="Batches per call.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option("--threads", default=os.cpu_count() or 1, show_default="all cores", type=click.IntRange(1))
@click.option("--seed", default=7, show_default=True)
@click.option("--output", default=str(ROOT / "BENCHMARKS.md"), show_default=True)
@click.option(
    "--save-windows", type=click.Path(dir_okay=False), help="Prepare the windows into FILE, and stop."
)
@click.option("--windows", "windows_file", type=click.Path(exists=True, dir_okay=False), help="Time these.")
def main(
    data: str,
    devices: str,
    batch_sizes: str,
    batches: int,
    repeats: int,
    threads: int,
    seed: int,
    output: str,
    save_windows: str | None,
    windows_file: str | None,
) -> None:
    names = [d.strip() for d in devices.split(",") if d.strip()]
    try:
        sizes = [int(b) for b in batch_sizes.split(",")]
        for name in names:
            training_device(name)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    torch.set_num_threads(threads)
    in_venv = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
    python = ".venv/bin/python" if in_venv else Path(sys.executable).name  # python3 on a GPU machine
    command = (f"{python} scripts/benchmark_throughput.py " + " ".join(sys.argv[1:])).strip()
    commit = current_commit(ROOT)
    if windows_file:
        model_cfg, train, pooled, stores, prepared_at = load_windows(Path(windows_file))
        commit = commit if commit != "?" else f"{prepared_at} (the windows' own; no git checkout here)"
    else:
        model_cfg, train, pooled, stores = prepare_windows(data, seed)
    if save_windows:
        save_windows_to(Path(save_windows), model_cfg, train, pooled, stores)
        log(f"wrote {len(pooled):,} windows of {stores} stores to {save_windows}")
        return
    trains = {b: replace(train, epochs=1, batch_size=b, max_batches_per_epoch=batches) for b in sizes}
    per_call = {b: min(len(pooled), b * batches) for b in sizes}
    for name in names:
        for b in sizes:
            time_training(model_cfg, pooled, replace(trains[b], max_batches_per_epoch=2), name, seed)
    seconds: dict[tuple[str, int], list[float]] = {(d, b): [] for d in names for b in sizes}
    for r in range(repeats):
        for name in names:
            for b in sizes:
                seconds[(name, b)].append(time_training(model_cfg, pooled, trains[b], name, seed))
        log(
            f"repeat {r + 1}/{repeats}: "
            + ", ".join(f"{d}@{b} {t[-1]:.2f}s" for (d, b), t in seconds.items())
        )
    lines = [
        "## Centralized training throughput (Walmart model)",
        "",
        f"Written by `scripts/benchmark_throughput.py` on {time.strftime('%Y-%m-%d')} at commit "
        f"{commit}; {hardware(names)}.",
        "",
        f"Command: `{command}`",
        "",
        f"{len(pooled):,} pooled training windows of {stores} stores (history up to {CUTOFF}); "
        f"model {model_cfg.hidden} hidden, {model_cfg.heads} heads, lookback "
        f"{model_cfg.lookback}, horizon {model_cfg.horizon}, "
        f"{sum(p.numel() for p in build_model(model_cfg, seed).parameters()):,} parameters. "
        f"Each call trains {batches} batches; {repeats} repeats.",
        "",
        *table(seconds, per_call),
    ]
    if not any(n.startswith("cuda") for n in names):
        lines += ["", "GPU: not measured (this machine has no CUDA GPU)."]
    write_marked_section(Path(output), "throughput", lines)
    log(f"wrote the throughput section of {output}")


if __name__ == "__main__":
    main()
