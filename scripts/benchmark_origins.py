"""Does training help? The model against its own untrained anchor, at origins before the benchmark window.

The Walmart model's head starts at zero, so an untrained model forecasts its anchor (last season
shifted; ``common.model``). This script prepares the 45 Walmart nodes at each origin and scores,
on the 13 weeks after it (WMAE, holiday weeks ×5): the untrained federated model (learning rate
0), the federated plaintext model, and the same two for local-only training; and, as an ablation,
both trained on every window of every series instead of the windows like its forecast
(``common.windows.like_forecasts``). These origins lie before the accuracy benchmark's window,
so choices made on them do not look at its scores.
One seed (run-to-run variation: see BENCHMARKS.md); the table goes to BENCHMARKS.md between markers.

    .venv/bin/python scripts/benchmark_origins.py
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.evaluation import current_commit, score, write_marked_section
from common.public_data import DATASETS, load_sales
from coordinator.planner.simulate import SimulationSettings, prepare_nodes, train_and_forecast
from warehouse_node import pipeline

ROOT = Path(__file__).resolve().parents[1]
ORIGINS = ("2011-07-29", "2012-01-27")
HORIZON = 13
RUNS = {  # label: (mode, run-config overrides, train on every window: the ablation)
    "federated plaintext, untrained (the anchor)": ("plain", {"learning-rate": 0.0}, False),
    "federated plaintext, trained": ("plain", {}, False),
    "federated plaintext, trained on every window (ablation)": ("plain", {}, True),
    "local only, untrained (the anchor)": ("local", {"learning-rate": 0.0}, False),
    "local only, trained": ("local", {}, False),
    "local only, trained on every window (ablation)": ("local", {}, True),
}


@contextmanager
def every_window(on: bool) -> Iterator[None]:
    """Ablation: series train on all their windows, not only those like their forecast."""
    saved = pipeline.like_forecasts
    pipeline._LOADED.clear()  # cached window sets were chosen with the other rule
    if on:
        pipeline.like_forecasts = lambda windows: windows
    try:
        yield
    finally:
        pipeline.like_forecasts = saved
        pipeline._LOADED.clear()


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def run_origin(data: Path, work: Path, origin: str, seed: int, rounds: int) -> list[dict]:
    ds = DATASETS["walmart"]
    sales = load_sales("walmart", data)
    dates = sorted(sales.loc[sales[ds.date] > pd.Timestamp(origin), ds.date].unique())[:HORIZON]
    actuals = sales[sales[ds.date].isin(dates)]
    if work.exists():
        shutil.rmtree(work)
    nodes = prepare_nodes(SimulationSettings("walmart", data, until=origin, rounds=rounds), work, log)
    rows = []
    for label, (mode, overrides, ablation) in RUNS.items():
        s = SimulationSettings(
            "walmart",
            data,
            mode=mode,
            rounds=rounds,
            seed=seed,
            until=origin,
            overrides=tuple(overrides.items()),
        )
        with every_window(ablation):
            fc, _ = train_and_forecast(nodes, s, work, log)
        scores = score(actuals, fc[fc[ds.date].isin(dates)], list(ds.keys), ds.date, ds.target, "IsHoliday")
        rows.append({"origin": origin, "run": label, **scores})
        log(f"{origin} {label}: WMAE {scores['wmae']:.1f}")
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    return rows


def table(rows: pd.DataFrame) -> list[str]:
    wide = rows.pivot_table(index="run", columns="origin", values="wmae", sort=False)
    origins = list(wide.columns)
    lines = [
        "| run | " + " | ".join(f"WMAE after {o}" for o in origins) + " |",
        "|---" * (1 + len(origins)) + "|",
    ]
    lines += [f"| {run} | " + " | ".join(f"{v:.1f}" for v in wide.loc[run]) + " |" for run in wide.index]
    fed, local = wide.loc["federated plaintext, trained"], wide.loc["local only, trained"]
    lines.append(
        "| federated trained / local trained | " + " | ".join(f"{v:.3f}" for v in fed / local) + " |"
    )
    return lines


@click.command()
@click.option("--data-root", default=str(ROOT.parent / "shared" / "data"), show_default=True)
@click.option("--work", default="/tmp/fedstock-bench-origins", show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--rounds", default=6, show_default=True)
def main(data_root: str, work: str, seed: int, rounds: int) -> None:
    data = Path(data_root) / "walmart"
    rows = pd.DataFrame([r for o in ORIGINS for r in run_origin(data, Path(work), o, seed, rounds)])
    body = [
        "## Does training help? The model against its untrained anchor at earlier origins",
        "",
        f"Written by `scripts/benchmark_origins.py` on {time.strftime('%Y-%m-%d')} at commit "
        f"{current_commit(ROOT)}; {platform.machine()}, CPU only. Walmart, 45 nodes, seed {seed}, "
        f"{rounds} rounds, the preset `coordinator/planner/presets/walmart.toml`; WMAE over the "
        f"{HORIZON} weeks after "
        "each origin. Untrained = learning rate 0: the forecast is the anchor itself.",
        "",
        "Command: `.venv/bin/python scripts/benchmark_origins.py`",
        "",
        *table(rows),
        "",
    ]
    write_marked_section(ROOT / "BENCHMARKS.md", "origins", body)
    print("\n".join(body))


if __name__ == "__main__":
    main()
