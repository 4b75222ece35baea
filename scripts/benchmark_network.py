"""The network forecast on Walmart: what the planner is shown vs the true total weekly sales.

45 stores federate under CKKS (history up to 2012-04-27, the same cut and presets as the accuracy
benchmark); after the last round every store encrypts its forecast totals per department and week,
the coordinator sums the 45 ciphertexts, the sites open the sum for the planner. It is
scored on the 13 held-out weeks (2012-05-04 .. 2012-07-27) against the sum of every true series:
MAE, MAPE and interval coverage under each dependence assumption (common/network.py), for the
network total and for the department totals. Writes BENCHMARKS.md (network-forecast section) and
benchmarks/network_forecast_walmart.png.

    .venv/bin/python scripts/benchmark_network.py --data-root ../shared/data
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import crypto
from common.evaluation import write_marked_section
from common.network import DEFAULT_DEPENDENCE, DEPENDENCE, Layout, group_label
from common.public_data import DATASETS, load_sales
from coordinator.checkpoints import NETWORK_META
from coordinator.planner.runs import network_forecast
from coordinator.planner.simulate import SimulationSettings, simulate

ROOT = Path(__file__).resolve().parents[1]
CUT = "2012-04-27"
PNG = ROOT / "benchmarks" / "network_forecast_walmart.png"


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def scores(frame: pd.DataFrame, truth: pd.Series) -> dict:
    """Point and interval scores of one group's forecast rows against the true totals."""
    f = frame.set_index("date").loc[truth.index]
    err = (f["mean"] - truth).abs()
    return {
        "mae": float(err.mean()),
        "mape": float((err / truth.abs().clip(lower=1e-9)).mean()),
        "coverage_80": float(((truth >= f["q10"]) & (truth <= f["q90"])).mean()),
        "coverage_90": float(((truth >= f["q05"]) & (truth <= f["q95"])).mean()),
        "width_80": float(((f["q90"] - f["q10"]) / f["mean"].clip(lower=1e-9)).mean()),
    }


def dept_coverage(frame: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Interval coverage over every (department, week) cell the stores forecast."""
    cells = frame[~frame["group"].isin(["total", "other"])].merge(truth, on=["group", "date"])
    inside80 = (cells["truth"] >= cells["q10"]) & (cells["truth"] <= cells["q90"])
    inside90 = (cells["truth"] >= cells["q05"]) & (cells["truth"] <= cells["q95"])
    return {"cells": len(cells), "coverage_80": float(inside80.mean()), "coverage_90": float(inside90.mean())}


def fan_with_truth(frame: pd.DataFrame, truth: pd.Series, history: pd.Series, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = frame[frame["group"] == "total"]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    recent = history[history.index > history.index.max() - pd.Timedelta(weeks=26)]
    ax.plot(recent.index, recent / 1e6, color="black", label="true total (history)")
    for lo, hi, alpha in (("q05", "q95", 0.15), ("q10", "q90", 0.3)):
        ax.fill_between(total["date"], total[lo] / 1e6, total[hi] / 1e6, color="tab:blue", alpha=alpha, lw=0)
    ax.plot(total["date"], total["mean"] / 1e6, color="tab:blue", label="network forecast (opened)")
    ax.plot(truth.index, truth / 1e6, color="tab:red", marker="o", ms=3, label="true total (held out)")
    ax.set_ylabel("weekly sales, $M")
    sites, dependence = int(total["sites"].iloc[0]), total["dependence"].iloc[0]
    ax.set_title(f"Walmart network forecast, {sites} stores, dependence '{dependence}'")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--data-root", default="../shared/data", show_default=True, type=click.Path(exists=True))
@click.option("--rounds", default=6, show_default=True, type=click.IntRange(1, 50))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--work", default="runs/benchmark-network", show_default=True, type=click.Path())
def main(data_root: str, rounds: int, seed: int, work: str) -> None:
    data = Path(data_root) / "walmart"
    ds = DATASETS["walmart"]
    sales = load_sales("walmart", data)
    cut = pd.Timestamp(CUT)
    history, actuals = sales[sales[ds.date] <= cut], sales[sales[ds.date] > cut]
    depts = sorted({group_label(v) for v in history["Dept"].unique()}, key=lambda v: (len(v), v))
    overrides = (
        ("network-forecast", True),
        ("network-min-sites", 3),
        ("network-group", "Dept"),
        ("network-groups", ",".join(depts)),
    )
    out = Path(work)
    if out.exists():
        shutil.rmtree(out)
    started = time.monotonic()
    settings = SimulationSettings("walmart", data, "he", rounds, seed, CUT, overrides)
    simulate(out, settings, log)
    seconds = time.monotonic() - started
    run_dir = out / "checkpoints"
    meta = json.loads((run_dir / NETWORK_META).read_text())

    truth_total = actuals.groupby(ds.date)[ds.target].sum()
    truth_dept = (
        actuals.assign(group=actuals["Dept"].map(group_label))
        .groupby(["group", ds.date])[ds.target]
        .sum()
        .rename("truth")
        .reset_index()
        .rename(columns={ds.date: "date"})
    )
    by_week = history.groupby(ds.date)[ds.target].sum()
    naive = pd.Series(
        [by_week.get(d - pd.Timedelta(weeks=52), np.nan) for d in truth_total.index], truth_total.index
    )
    naive_mae = float((naive - truth_total).abs().mean())
    forecasts = pd.read_parquet(out / "forecasts.parquet")
    keyed = actuals.merge(
        forecasts[["Store", "Dept"]].drop_duplicates(), on=["Store", "Dept"], how="left", indicator=True
    )
    unforecast = float(keyed.loc[keyed["_merge"] == "left_only", ds.target].sum() / actuals[ds.target].sum())

    rows = []
    for dependence in DEPENDENCE:
        frame = network_forecast(run_dir, dependence=dependence)  # as the sites opened it
        total = scores(frame[frame["group"] == "total"], truth_total)
        dept = dept_coverage(frame, truth_dept)
        rows.append(
            {
                "dependence": dependence,
                **total,
                "dept_cells": dept["cells"],
                "dept_coverage_80": dept["coverage_80"],
                "dept_coverage_90": dept["coverage_90"],
            }
        )
        log(f"{dependence}: {rows[-1]}")
        if dependence == DEFAULT_DEPENDENCE:
            fan_with_truth(frame, truth_total, by_week, PNG)
    layout = Layout("Dept", tuple(meta["groups"]), len(meta["dates"]))
    chunks = -(-layout.length // crypto.load_public(out / "keys").slot_count)
    lines = [
        "## Network forecast (what the planner is shown, vs the true network total)",
        "",
        "Command (2 CPU cores, no GPU): "
        "`.venv/bin/python scripts/benchmark_network.py --data-root ../shared/data`",
        "",
        f"45 Walmart stores federate under CKKS ({rounds} rounds, seed {seed}, history up to {CUT}); "
        f"after the last round each store encrypts its forecast totals for {len(meta['groups'])} groups "
        f"(network total, {len(meta['groups']) - 2} departments, other) × {len(meta['dates'])} weeks; "
        f"the coordinator summed {meta['sites']} ciphertexts and the sites opened the sum for the planner. "
        f"Scored against the sum of every true series in the 13 held-out weeks ({meta['dates'][0]} .. "
        f"{meta['dates'][-1]}). Whole run {seconds / 60:.1f} min.",
        "",
        "| dependence assumed | total: MAE ($) | total: MAPE | total: 80% coverage | total: 90% coverage "
        "| total: 80% width / mean | department-weeks: 80% coverage | department-weeks: 90% coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dependence']} ({DEPENDENCE[r['dependence']]}) | {r['mae']:,.0f} | {r['mape']:.2%} "
            f"| {r['coverage_80']:.0%} | {r['coverage_90']:.0%} | {r['width_80']:.1%} "
            f"| {r['dept_coverage_80']:.1%} | {r['dept_coverage_90']:.1%} |"
        )
    lines += [
        "",
        "- Reference: seasonal naive for the total (the same week a year earlier) has MAE "
        f"${naive_mae:,.0f}; the true weekly total averages ${truth_total.mean():,.0f}.",
        f"- Department-week cells scored: {rows[0]['dept_cells']}. {unforecast:.2%} of the held-out sales "
        "come from series with no history at the cut (nobody forecast them), and count in the truth only.",
        f"- Each store sends {layout.length} values ({layout.cells} cells × 3 fixed-point digits) in "
        f"{chunks} ciphertexts; the sums are exact to 2^-24 per cell "
        "(tests/federation/test_network_forecast.py).",
        "- The temperature, fuel price, CPI and unemployment inputs are past-only (no oracle); holidays and "
        "markdowns are known-future inputs, as in the accuracy benchmark.",
        f"- Figure: `benchmarks/network_forecast_walmart.png` (dependence '{DEFAULT_DEPENDENCE}', "
        "the default).",
        "",
    ]
    write_marked_section(ROOT / "BENCHMARKS.md", "network-forecast", lines)
    print(json.dumps({"rows": rows, "naive_mae": naive_mae, "minutes": seconds / 60}))


if __name__ == "__main__":
    main()
