"""One node's local training speed (windows per second) on the CPU, before and after a change.

A federated round trains each node's model from the global weights on its own windows
(``warehouse_node.federated.round_update`` -> ``warehouse_node.pipeline.local_update`` ->
``common.training.train_local``). This times that call for one real node per preset: store 1 of
Walmart and store 1 of store_item, written by ``common.public_data.WRITERS``, prepared by the node
pipeline (``prepare_node``, ``NodeData``) and windowed with the preset's model (round 1 of
``coordinator.planner.simulate``'s settings, no validation hold-out). The cross-site denoising of the
Walmart preset is left off: it needs every store's history, and it changes the values of the
seasonal-lag input, not the work of a training step.

Each timing is one ``train_local`` call on a fresh model and a fresh ``WindowSet`` (so whatever a
call prepares from the windows is paid in it) over ``--batches`` batches of the preset's batch size
from a fixed seed, at each torch thread count. The old code (``common/`` of ``--baseline``, taken
with ``git archive``) and the new (this checkout) run in two worker processes that take turns, the
order alternating, so "after / before" is a median of ratios of runs made side by side on the same
windows. The final weights of the two are compared as well.

    .venv/bin/python scripts/benchmark_node_speed.py --out /tmp/node_speed.md
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_FOLDERS = {"walmart": "walmart", "store_item": "store_item_demand"}
WINDOW_ARRAYS = ("past", "events", "target", "static_ids", "log_scale", "index")
CHANGED = ("common/training.py", "common/windows.py", "common/model.py")


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- preparing the nodes (this checkout)


def prepare(dataset: str, data: Path, node: int, work: Path, seed: int) -> dict:
    """The first (or ``node``-th) node folder of ``dataset``, prepared; its windows saved to ``work``."""
    sys.path.insert(0, str(ROOT))
    from common.config import load_node_config
    from common.public_data import WRITERS
    from coordinator.planner.simulate import SimulationSettings
    from warehouse_node.federated import RoundSettings
    from warehouse_node.pipeline import NodeData, prepare_node

    s = SimulationSettings(dataset, data, mode="plain", seed=seed)
    rc = {**s.run_config(work), "denoise-rank": 0}
    settings = RoundSettings.of({**rc, "server-round": 1})  # what a node reads from round 1's config
    dirs = WRITERS[dataset](data, work / dataset / "nodes", None)
    cfg = load_node_config(dirs[node - 1])
    prepare_node(cfg)
    node_data = NodeData.load(cfg, settings.model.horizon, settings.validation)
    windows = node_data.train_windows(settings.model)
    path = work / f"{dataset}.npz"
    np.savez(path, **{k: getattr(windows, k) for k in WINDOW_ARRAYS})
    train = {k: getattr(settings.train, k) for k in ("batch_size", "learning_rate", "grad_clip")}
    train |= {"scale_weight": settings.train.scale_weight, "progress": list(settings.train.progress)}
    return {
        "dataset": dataset,
        "node": dirs[node - 1].name,
        "nodes": len(dirs),
        "windows_file": str(path),
        "windows": len(windows),
        "series": len(windows.series),
        "model": settings.model.to_dict(),
        "train": train,
        "seed": settings.round_seed,
    }


# ---------------------------------------------------------------- the worker (one code tree)


def worker(tree: Path) -> None:
    """Serve timing requests (one JSON line each on stdin) with the ``common`` package of ``tree``."""
    sys.path.insert(0, str(tree))
    import torch

    from common.model import ModelConfig, build_model, model_vector
    from common.training import TrainConfig, train_local
    from common.windows import WindowSet

    assert Path(sys.modules["common.training"].__file__).resolve().is_relative_to(tree.resolve())
    loaded: dict[str, tuple] = {}
    for line in sys.stdin:
        job = json.loads(line)
        node = job["node"]
        if node["dataset"] not in loaded:
            with np.load(node["windows_file"]) as saved:
                arrays = {k: saved[k] for k in WINDOW_ARRAYS}
            m = node["model"]
            loaded[node["dataset"]] = (ModelConfig(**{**m, "quantiles": tuple(m["quantiles"])}), arrays)
        model_cfg, arrays = loaded[node["dataset"]]
        epochs = job["epochs"]
        t = node["train"]
        train = TrainConfig(
            epochs=epochs,
            batch_size=t["batch_size"],
            learning_rate=t["learning_rate"],
            max_batches_per_epoch=job["batches"] // epochs,
            grad_clip=t["grad_clip"],
            scale_weight=t["scale_weight"],
            progress=tuple(t["progress"]),
            proximal=t.get("proximal", 0.0),
        )
        torch.set_num_threads(job["threads"])
        windows = WindowSet(
            [str(i) for i in range(len(arrays["past"]))],
            **arrays,
            lookback=model_cfg.lookback,
            horizon=model_cfg.horizon,
        )
        model = build_model(model_cfg, node["seed"])
        started = time.perf_counter()
        loss = train_local(model, windows, train, node["seed"])
        seconds = time.perf_counter() - started
        if job.get("weights"):
            np.save(job["weights"], model_vector(model))
        print(json.dumps({"seconds": seconds, "loss": loss}), flush=True)


class Worker:
    def __init__(self, tree: Path) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, **job: object) -> dict:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise click.ClickException(f"a timing worker stopped (exit code {self.process.wait()})")
        return json.loads(reply)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)


# ---------------------------------------------------------------- the run


def baseline_tree(rev: str, out: Path) -> str:
    """Extract ``common/`` of ``rev`` into ``out``; return the short commit hash."""
    archive = subprocess.run(["git", "archive", rev, "common"], cwd=ROOT, capture_output=True, check=False)
    if archive.returncode:
        raise click.UsageError(f"--baseline {rev}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    short = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True)
    return short.stdout.strip()


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import torch

    return f"{os.cpu_count()} CPU cores ({cpu}); torch {torch.__version__}, numpy {np.__version__}"


def table(nodes: list[dict], rates: dict, batches: int) -> list[str]:
    lines = [
        "| preset | node (windows) | lookback / horizon | threads | before, windows/s | after, windows/s "
        "| after / before (median of paired ratios, min..max) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for node in nodes:
        m = node["model"]
        for threads in sorted({k[1] for k in rates if k[0] == node["dataset"]}):
            old, new = rates[(node["dataset"], threads, "old")], rates[(node["dataset"], threads, "new")]
            ratios = [n / o for n, o in zip(new, old, strict=True)]
            lines.append(
                f"| {node['dataset']} | {node['node']} ({node['windows']:,}) | {m['lookback']} / "
                f"{m['horizon']} | {threads} | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} "
                f"| **{statistics.median(ratios):.2f}** ({min(ratios):.2f}..{max(ratios):.2f}) |"
            )
    return lines


def same_results(nodes: list[dict], compare: dict) -> list[str]:
    lines = []
    for node in nodes:
        for threads, (old, new) in sorted(compare[node["dataset"]].items()):
            a, b = np.load(old["weights"]), np.load(new["weights"])
            diff = float(np.abs(a - b).max())
            verdict = "bit-identical" if np.array_equal(a, b) else f"max |Δweight| {diff:.2e}"
            lines.append(
                f"- {node['dataset']}, {threads} thread(s): final weights {verdict} "
                f"({len(a):,} parameters); training loss {old['loss']:.6f} before, {new['loss']:.6f} after."
            )
    return lines


@click.command()
@click.option("--data-root", default=str(ROOT.parent / "shared" / "data"), show_default=True)
@click.option("--datasets", default="walmart,store_item", show_default=True)
@click.option("--node", default=1, show_default=True, type=click.IntRange(1), help="Which node folder.")
@click.option("--batches", default=30, show_default=True, type=click.IntRange(1), help="Batches per call.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option("--threads", default="1,2", show_default=True, help="torch thread counts.")
@click.option("--seed", default=7, show_default=True)
@click.option("--baseline", default="HEAD", show_default=True, help="git revision of the 'before' code.")
@click.option("--out", default=str(ROOT / "BENCHMARKS.md"), show_default=True, help="Markdown file to write.")
@click.option("--worker", "worker_tree", type=click.Path(exists=True, file_okay=False), hidden=True)
def main(
    data_root: str,
    datasets: str,
    node: int,
    batches: int,
    repeats: int,
    threads: str,
    seed: int,
    baseline: str,
    out: str,
    worker_tree: str | None,
) -> None:
    if worker_tree:
        worker(Path(worker_tree))
        return
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in DATA_FOLDERS]
    if unknown:
        raise click.UsageError(f"unknown dataset {unknown[0]!r}: choose from {', '.join(DATA_FOLDERS)}")
    thread_counts = [int(t) for t in threads.split(",") if t.strip()]
    in_venv = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
    python = ".venv/bin/python" if in_venv else Path(sys.executable).name
    command = (f"{python} scripts/benchmark_node_speed.py " + " ".join(sys.argv[1:])).strip()
    sys.path.insert(0, str(ROOT))
    from common.evaluation import current_commit, write_marked_section

    with tempfile.TemporaryDirectory(prefix="fedstock-node-speed-") as tmp:
        work = Path(tmp)
        old_commit = baseline_tree(baseline, work / "baseline")
        nodes = []
        for dataset in names:
            nodes.append(prepare(dataset, Path(data_root) / DATA_FOLDERS[dataset], node, work, seed))
            log(f"{dataset}: {nodes[-1]['node']} prepared, {nodes[-1]['windows']:,} training windows")
        workers = {"old": Worker(work / "baseline"), "new": Worker(ROOT)}
        try:
            rates, compare = run_timings(workers, nodes, thread_counts, batches, repeats, work)
        finally:
            for w in workers.values():
                w.close()
        lines = report(nodes, rates, compare, batches, repeats, command, old_commit, current_commit(ROOT))
    write_marked_section(Path(out), "node-speed", lines)
    log(f"wrote the node-speed section of {out}")


def run_timings(
    workers: dict, nodes: list[dict], thread_counts: list[int], batches: int, repeats: int, work: Path
) -> tuple[dict, dict]:
    rates: dict[tuple[str, int, str], list[float]] = {}
    compare: dict[str, dict[int, tuple[dict, dict]]] = {n["dataset"]: {} for n in nodes}
    for n in nodes:
        per_epoch = math.ceil(n["windows"] / n["train"]["batch_size"])
        n["epochs"] = math.ceil(batches / per_epoch)  # a small node runs out of windows in one epoch
        for threads in thread_counts:
            for w in workers.values():  # warm-up, untimed; then the weights of a full call
                w.run(node=n, threads=threads, batches=2 * n["epochs"], epochs=n["epochs"])
            pair = tuple(
                workers[name].run(
                    node=n,
                    threads=threads,
                    batches=batches - batches % n["epochs"],
                    epochs=n["epochs"],
                    weights=str(work / f"{n['dataset']}-{threads}-{name}.npy"),
                )
                | {"weights": str(work / f"{n['dataset']}-{threads}-{name}.npy")}
                for name in ("old", "new")
            )
            compare[n["dataset"]][threads] = pair
    for r in range(repeats):
        for n in nodes:
            count = batches - batches % n["epochs"]
            windows = min(n["windows"], n["train"]["batch_size"] * count // n["epochs"]) * n["epochs"]
            for threads in thread_counts:
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for name in order:
                    reply = workers[name].run(node=n, threads=threads, batches=count, epochs=n["epochs"])
                    rates.setdefault((n["dataset"], threads, name), []).append(windows / reply["seconds"])
                old, new = (
                    rates[(n["dataset"], threads, "old")][-1],
                    rates[(n["dataset"], threads, "new")][-1],
                )
                log(
                    f"repeat {r + 1}/{repeats} {n['dataset']} {threads} thread(s): "
                    f"{old:,.0f} -> {new:,.0f} windows/s"
                )
    return rates, compare


def report(
    nodes: list[dict],
    rates: dict,
    compare: dict,
    batches: int,
    repeats: int,
    command: str,
    old_commit: str,
    commit: str,
) -> list[str]:
    dirty = subprocess.run(
        ["git", "status", "--porcelain", *CHANGED], cwd=ROOT, capture_output=True, text=True
    )
    changed = [line[3:] for line in dirty.stdout.splitlines()]
    after = f"{commit} with uncommitted changes to {', '.join(changed)}" if changed else commit
    calls = ", ".join(
        f"{n['dataset']}: {n['epochs']} epoch(s) × {(batches - batches % n['epochs']) // n['epochs']} "
        f"batches of {n['train']['batch_size']}"
        for n in nodes
    )
    return [
        "## Node training speed (one node's round on the CPU)",
        "",
        f"Written by `scripts/benchmark_node_speed.py` on {time.strftime('%Y-%m-%d')}; before: `common/` at "
        f"{old_commit}, after: {after}; {hardware()}.",
        "",
        f"Command: `{command}`",
        "",
        "One `train_local` call per timing on a fresh model and a fresh window set, from the round-1 seed: "
        f"{calls}. Old and new code take turns in two worker processes (order alternating), {repeats} "
        "repeats; windows/s are medians, the ratio is the median of the ratios of runs made side by side. "
        "Nodes: the first store of each dataset through the node pipeline, the preset's model, no "
        "cross-site denoising (it changes input values, not the work).",
        "",
        *table(nodes, rates, batches),
        "",
        "Same results (one full call each, old and new code, same seed):",
        "",
        *same_results(nodes, compare),
    ]


if __name__ == "__main__":
    main()
