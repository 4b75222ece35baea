"""How fast a node decides its stock: ``warehouse_node.replenish.replenish`` over many skus.

Synthetic forecasts (the node's quantile levels, daily, horizon 14) and stock rows (lead times 1..4,
review periods 1..7) for each size; one call decides every sku, 4,000 sample paths each. Beside it,
the paths alone: ``common.inventory.sample_paths`` (AR(1) recursion) against the same draw through
a Cholesky factor and a matrix product, the obvious way, which interleaves numpy's BLAS threads
with torch's. Sizes and the two draws take turns within each repeat; medians over repeats.

    .venv/bin/python scripts/benchmark_replenish.py
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.evaluation import current_commit, write_marked_section
from common.inventory import StrategyConfig, sample_paths
from common.model import DEFAULT_QUANTILES
from warehouse_node.replenish import replenish

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 14


def synthetic(skus: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecasts [sku × day] with normal-shaped quantiles, and one stock row per sku."""
    rng = np.random.default_rng(seed)
    names = [f"SKU-{i:05d}" for i in range(skus)]
    dates = pd.date_range("2025-01-01", periods=HORIZON, freq="D")
    mean = rng.lognormal(2.5, 1.0, skus)[:, None] * (1 + 0.2 * np.sin(np.arange(HORIZON) / 2))
    fc = pd.DataFrame({"sku": np.repeat(names, HORIZON), "date": np.tile(dates, skus), "mean": mean.ravel()})
    for level in DEFAULT_QUANTILES:
        z = torch.special.ndtri(torch.tensor(level)).item()
        fc[f"q{round(level * 100):02d}"] = np.maximum(fc["mean"] * (1 + 0.35 * z), 0.0)
    fc["residual_sd"], fc["path_corr"] = 0.35 * fc["mean"], 0.4
    stock = pd.DataFrame(
        {
            "sku": names,
            "on_hand": rng.integers(0, 400, skus),
            "lead_time": rng.integers(1, 5, skus),
            "review_period": rng.integers(1, 8, skus),
        }
    )
    return fc, stock


def cholesky_paths(quantiles: np.ndarray, levels: tuple[float, ...], rho: float, n: int, rng) -> np.ndarray:
    """The same draw as sample_paths through an explicit Cholesky factor (the comparison)."""
    h = quantiles.shape[0]
    cov = rho ** np.abs(np.subtract.outer(np.arange(h), np.arange(h)))
    z = rng.standard_normal((n, h)) @ np.linalg.cholesky(cov + 1e-9 * np.eye(h)).T
    u = torch.special.ndtr(torch.from_numpy(z)).numpy()
    return np.clip(np.stack([np.interp(u[:, t], levels, quantiles[t]) for t in range(h)], axis=1), 0, None)


def time_paths(draw, quantiles: np.ndarray, levels: tuple[float, ...], skus: int) -> float:
    """Seconds per sku of drawing 4,000 paths, over ``skus`` draws."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(skus):
        draw(quantiles, levels, 0.4, StrategyConfig().paths, rng)
    return (time.perf_counter() - started) / skus


def decide_row(skus: int, seconds: list[float]) -> str:
    median = statistics.median(seconds)
    return f"| {skus:,} | {median:.1f} ({min(seconds):.1f}..{max(seconds):.1f}) | {skus / median:,.0f} |"


@click.command()
@click.option("--skus", default="1000,5000", show_default=True, help="Stock file sizes, comma-separated.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--path-draws", default=300, show_default=True, type=click.IntRange(1))
@click.option("--output", default=str(ROOT / "BENCHMARKS.md"), show_default=True)
def main(skus: str, repeats: int, path_draws: int, output: str) -> None:
    sizes = [int(s) for s in skus.split(",")]
    data = {n: synthetic(n, seed=n) for n in sizes}
    levels = tuple(DEFAULT_QUANTILES)
    quantiles = data[sizes[0]][0].filter(regex=r"^q\d\d$").to_numpy()[:HORIZON]
    decide_s: dict[int, list[float]] = {n: [] for n in sizes}
    draws: dict[str, list[float]] = {"AR(1) recursion (sample_paths)": [], "Cholesky + matrix product": []}
    for r in range(repeats):
        for n in sizes:
            started = time.perf_counter()
            result = replenish(*data[n], "D")
            decide_s[n].append(time.perf_counter() - started)
            assert len(result.decisions) == n, result.rejected.head()
        for name, draw in zip(draws, (sample_paths, cholesky_paths), strict=True):
            draws[name].append(time_paths(draw, quantiles, levels, path_draws))
        click.echo(
            f"repeat {r + 1}/{repeats}: " + ", ".join(f"{n} skus {t[-1]:.1f}s" for n, t in decide_s.items())
        )
    first = statistics.median(next(iter(draws.values())))
    lines = [
        "## Replenishment decisions per second (one node)",
        "",
        f"Written by `scripts/benchmark_replenish.py` on {time.strftime('%Y-%m-%d')} at commit "
        f"{current_commit(ROOT)}; {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}. Command: "
        + f"`{' '.join(['.venv/bin/python scripts/benchmark_replenish.py', *sys.argv[1:]])}`. "
        + f"Synthetic forecasts, horizon {HORIZON}, {len(levels)} quantiles, "
        f"{StrategyConfig().paths:,} paths per sku; {repeats} repeats, medians (min..max).",
        "",
        "| skus | seconds for one `replenish` call | skus decided per second |",
        "|---:|---:|---:|",
        *(decide_row(n, t) for n, t in decide_s.items()),
        "",
        f"| sample paths of one sku ({path_draws} draws) | ms per sku | × the recursion |",
        "|---|---:|---:|",
        *(
            f"| {name} | {1000 * statistics.median(t):.2f} | {statistics.median(t) / first:.2f} |"
            for name, t in draws.items()
        ),
    ]
    write_marked_section(Path(output), "replenish", lines)
    click.echo(
        f"wrote the replenish section of {output} ({math.fsum(map(sum, decide_s.values())):.0f}s of deciding)"
    )


if __name__ == "__main__":
    main()
