"""Stock saved at the same service: a year of rolling replenishment, whole systems side by side.

Each system (scripts/inventory_systems.py) is retrained on a fixed schedule and re-forecasts at
every review from the demand seen so far; its best policy is replayed over the last year of the
shared history (Walmart: 52 weekly reviews in value, store_item: 365 daily reviews in units),
after a warm-up that is not scored, for every lead time, with lost sales and with backorders, over
a sweep of service targets (scripts/inventory_replay.py). A distribution center upstream stocks
the network total from the network forecast the sites would sum under CKKS, with the cross-site
dependence calibrated from the sites' own errors. Tables go to BENCHMARKS.md (one section per
dataset), plots to benchmarks/, and each system's forecasts are kept in WORK, so the systems can
be run in parts (``--systems``) and the replay redone from them (``--replay-only``).

    .venv/bin/python scripts/benchmark_inventory.py --datasets walmart
    .venv/bin/python scripts/benchmark_inventory.py --quick        # < 10 min, last line: JSON
    .venv/bin/python scripts/benchmark_inventory.py --datasets walmart --systems he --forecast-only
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import click
import matplotlib
import numpy as np
import pandas as pd
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.evaluation import current_commit, write_marked_section
from common.public_data import DATASETS, load_sales
from scripts import inventory_systems as systems
from scripts.inventory_replay import TARGETS, Forecasts, NetworkForecast, at_fill, distribution_center, sweep

ROOT = Path(__file__).resolve().parents[1]
ROWS = {  # table row: (forecast system, its policy)
    "seasonal naive + classical": ("snaive", "classical"),
    "AutoETS + classical": ("ets", "classical"),
    "global LightGBM + its quantiles": ("lightgbm", "probabilistic"),
    "LSTM local-only + probabilistic": ("local", "probabilistic"),
    "LSTM federated CKKS + probabilistic": ("he", "probabilistic"),
    "seeds' rule (federated forecast)": ("he", "seed-rule"),
    "LSTM federated CKKS + classical (diagnostic)": ("he", "classical"),
}
FED, ETS, SNAIVE, SEED = (
    "LSTM federated CKKS + probabilistic",
    "AutoETS + classical",
    "seasonal naive + classical",
    "seeds' rule (federated forecast)",
)
FILLS = (0.95, 0.98)
QUICK_STORES = 8  # --quick: Walmart stores 1..8, one lead time, two trainings, 3 rounds at most


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def panel(name: str, system: str, ctx: dict) -> pd.DataFrame | None:
    """A system's forecasts: made now when asked for (``ctx['run']``), else kept from a run before."""
    saved = ctx["work"] / f"{system}.parquet"
    if system in ctx["run"]:
        started = time.monotonic()
        frame = _make(name, system, ctx)
        frame.to_parquet(saved, index=False)
        meta = {
            "commit": current_commit(ROOT),
            "seconds": round(time.monotonic() - started),
            "date": time.strftime("%Y-%m-%d"),
        }
        saved.with_suffix(".json").write_text(json.dumps(meta))
        log(f"{name}: {system} forecasts made in {meta['seconds']} s")
    return pd.read_parquet(saved) if saved.is_file() else None


def _make(name: str, system: str, ctx: dict) -> pd.DataFrame:
    setup, tl, sales, steps = ctx["setup"], ctx["timeline"], ctx["sales"], ctx["steps"]
    if system == "snaive":
        return systems.snaive(sales, name, tl, steps, setup.season, log)
    if system == "ets":
        return systems.ets(sales, name, tl, steps, setup.ets_season, log)
    if system == "lightgbm":
        return systems.lightgbm(sales, name, tl, steps, ctx["data"], log)
    return systems.lstm(name, system, tl, steps, ctx["data"], ctx["work"], ctx["seed"], ctx["rounds"], log)


def run_dataset(name: str, ctx: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    setup, tl, sales = ctx["setup"], ctx["timeline"], ctx["sales"]
    ds = DATASETS[name]
    keys = list(ds.keys)
    panels = {s: panel(name, s, ctx) for s in dict.fromkeys(v[0] for v in ROWS.values())}
    skus, demand = replay_skus(sales, name, tl)
    origins = tl.origins
    results, made = [], {}
    for label, (system, policy) in ROWS.items():
        if panels[system] is None:
            continue
        fc = Forecasts.of(panels[system], keys, skus, origins, ctx["steps"])
        log(f"{name}: replaying {label} over {len(skus)} skus ({fc.missing:.2%} reviews without a forecast)")
        frame = sweep(fc, policy, demand, ctx["leads"], ctx["setup"].warmup, setup.year, ctx["seed"])
        results.append(frame.assign(dataset=name, system=label, policy=policy, missing=fc.missing))
        made[system] = json.loads((ctx["work"] / f"{system}.json").read_text())
    dc, figures = pd.DataFrame(), {}
    if panels["he"] is not None:
        dc, figures = _dc(panels["he"], keys, skus, demand, tl, ctx)
    return pd.concat(results, ignore_index=True), dc, figures, made


def replay_skus(sales: pd.DataFrame, name: str, tl: systems.Timeline) -> tuple[pd.MultiIndex, np.ndarray]:
    """Series sold at or before the first training and with demand in the replay: every system is
    replayed on the same ones. Demand [skus, periods]; a period without a row is no demand."""
    ds = DATASETS[name]
    wide = sales.pivot_table(index=list(ds.keys), columns=ds.date, values=ds.target, aggfunc="sum")
    known = wide.loc[:, wide.columns <= tl.training_origin(0)].notna().any(axis=1)
    window = wide.reindex(columns=tl.replay_dates).fillna(0.0).clip(lower=0.0)
    keep = known & (window.sum(axis=1) > 0)
    return window.index[keep], window[keep].to_numpy(dtype=float)


def _dc(he: pd.DataFrame, keys, skus, demand, tl: systems.Timeline, ctx: dict) -> tuple[pd.DataFrame, dict]:
    """The network forecast from the federated model's forecasts, with ``calibration`` reviews
    before the replay, and the DC replayed on it."""
    before = tl.dates[tl.start - 1 - tl.calibration : tl.start - 1]
    origins = before.append(tl.origins)
    fc = Forecasts.of(he, keys, skus, origins, ctx["steps"])
    wide = ctx["sales"].pivot_table(
        index=keys, columns=DATASETS[ctx["name"]].date, values=DATASETS[ctx["name"]].target, aggfunc="sum"
    )
    seen = (
        wide.reindex(index=skus, columns=tl.dates[tl.start - tl.calibration : tl.start])
        .fillna(0.0)
        .to_numpy()
    )
    net = NetworkForecast.of(fc, np.concatenate([seen, demand], axis=1), skus.get_level_values(0).to_numpy())
    window = int(ctx["setup"].year)
    return distribution_center(
        net, tl.calibration, ctx["setup"].warmup, ctx["leads"], ctx["setup"].year, window, ctx["seed"]
    )


def plot(results: pd.DataFrame, name: str, unit: str, path: Path) -> None:
    leads = sorted(results["lead"].unique())
    fig, axes = plt.subplots(1, len(leads), figsize=(5.5 * len(leads), 4.4), squeeze=False)
    for ax, lead in zip(axes[0], leads, strict=True):
        sub = results[(results["lead"] == lead) & (results["sales"] == "lost sales")]
        for i, (label, g) in enumerate(sub.groupby("system", sort=False)):
            g = g.sort_values("target")
            ax.plot(
                g["fill_rate"],
                g["on_hand_value"],
                marker="o",
                ms=3,
                color=f"C{i}",
                label=label,
                ls="--" if "diagnostic" in label else "-",
            )
        for fill in FILLS:
            ax.axvline(fill, color="grey", lw=0.8, ls=":")
        ax.set_xlim(0.85, 1.0)
        ax.set_title(f"{name}, lead time {lead}, lost sales")
        ax.set_xlabel("achieved fill rate (scored year)")
        ax.set_ylabel(f"average on-hand ({unit})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _amount(v: float) -> str:
    return "not reached" if not np.isfinite(v) else f"{v:,.0f}"


def system_lines(res: pd.DataFrame, unit: str) -> list[str]:
    lines = [
        f"| lead | sales | system | on-hand at 95% / 98% fill ({unit}) | lowest cost (target) "
        "| stockout periods at 95% fill | turnover at 95% fill | reviews without a forecast |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (lead, sales), sub in res.groupby(["lead", "sales"], sort=True):
        for label, g in sub.groupby("system", sort=False):
            if label == SEED:
                p = g.iloc[0]
                held = f"one point: fill {p['fill_rate']:.3f}, on-hand {p['on_hand_value']:,.0f}"
                stock, turn = f"{p['stockout_periods']:,.0f}", f"{p['turnover']:.1f}"
            else:
                held = " / ".join(_amount(at_fill(g, f)) for f in FILLS)
                stock, turn = (
                    _amount(at_fill(g, 0.95, "stockout_periods")),
                    f"{at_fill(g, 0.95, 'turnover'):.1f}",
                )
            best = g.loc[g["total_cost"].idxmin()]
            cost = (
                f"{best['total_cost']:,.0f} ({best['target']:g})"
                if label != SEED
                else f"{best['total_cost']:,.0f}"
            )
            missing = f"{g['missing'].iloc[0]:.2%}"
            lines.append(f"| {lead} | {sales} | {label} | {held} | {cost} | {stock} | {turn} | {missing} |")
    return lines


def target_figures(res: pd.DataFrame, lead: int, sales: str = "lost sales") -> dict[str, float]:
    sub = res[(res["lead"] == lead) & (res["sales"] == sales)]
    curve = {label: g for label, g in sub.groupby("system")}
    out = {}
    if FED not in curve:
        return out
    fed = curve[FED]
    for label, key in ((ETS, "ets_classical"), (SNAIVE, "snaive_classical")):
        if label in curve:
            out[f"onhand_ratio_vs_{key}"] = at_fill(fed, 0.95) / at_fill(curve[label], 0.95)
            out[f"cost_ratio_vs_{key}"] = fed["total_cost"].min() / curve[label]["total_cost"].min()
    if SEED in curve:
        seed = curve[SEED].iloc[0]
        out["onhand_ratio_vs_seed_rule_at_its_fill"] = at_fill(fed, seed["fill_rate"]) / seed["on_hand_value"]
        out["cost_ratio_vs_seed_rule_at_its_fill"] = (
            at_fill(fed, seed["fill_rate"], "total_cost") / seed["total_cost"]
        )
    return out


def dc_lines(dc: pd.DataFrame, figures: dict, res: pd.DataFrame) -> list[str]:
    cov = figures["coverage80"]
    lines = [
        f"Network (DC) forecast, next period's total over the {figures['weeks']} scored periods: "
        f"80% interval coverage **{cov['calibrated']:.3f}** with the calibrated dependence "
        f"(median ρ {figures['rho_median']:.2f}, "
        f"variance scale k {figures['k_median']:.2f}); {cov['site']:.3f} with sites independent ('site'), "
        f"{cov['network']:.3f} with every series moving together ('network'). The DC's periods are "
        f"correlated as the network errors persisted (median {figures['horizon_rho_median']:.2f}; the "
        f"sites' own paths: {figures['sites_path_corr']:.2f}).",
        "",
        "| lead | target | DC safety stock | Σ sites' safety stock (federated + probabilistic) "
        "| DC / Σ sites | DC fill rate | sites' fill rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for lead, g in dc.groupby("lead"):
        fed = res[(res["system"] == FED) & (res["lead"] == lead) & (res["sales"] == "lost sales")]
        for target in (0.95, 0.99):
            own, sites = g[g["target"] == target].iloc[0], fed[fed["target"] == target].iloc[0]
            lines.append(
                f"| {lead} | {target:g} | {_amount(own['safety_stock'])} | "
                f"{_amount(sites['safety_stock'])} | {own['safety_stock'] / sites['safety_stock']:.3f} | "
                f"{own['fill_rate']:.3f} | "
                f"{sites['fill_rate']:.3f} |"
            )
    return lines


def write_section(name: str, res, dc, figures, made, ctx, command: str, png: str) -> None:
    setup, tl = ctx["setup"], ctx["timeline"]
    hardware = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}"
    trained = ", ".join(str(tl.training_origin(k).date()) for k in range(tl.trainings))
    measured = ", ".join(f"{s} at {m['commit']} ({m['date']}, {m['seconds']} s)" for s, m in made.items())
    lines = [
        f"### {name}: a year of rolling replenishment",
        "",
        f"Written by `scripts/benchmark_inventory.py` on {time.strftime('%Y-%m-%d')}; {hardware}. "
        f"Command: `{command}`. Replay: {len(tl.replay_dates)} reviews {tl.replay_dates[0].date()}.."
        f"{tl.replay_dates[-1].date()}, the first {setup.warmup} a warm-up not scored; every system "
        f"retrained {tl.trainings} times, every {tl.every} periods (at {trained}), and re-forecast at "
        "every review from the history through the period before. Review every period; targets swept "
        f"{', '.join(f'{t:g}' for t in TARGETS)}; holding 25%/year of the value on hand, shortage 50% "
        f"of the value short. Forecasts made: {measured}; replayed at {current_commit(ROOT)}. "
        f"Plot: `{png}`.",
        "",
        *system_lines(res, setup.unit),
        "",
    ]
    for lead in ctx["leads"]:
        figs = target_figures(res, lead)
        lines.append(f"- lead {lead}, lost sales: " + ", ".join(f"{k} {v:.3f}" for k, v in figs.items()))
    if figures:
        lines += ["", *dc_lines(dc, figures, res)]
    write_marked_section(ROOT / "BENCHMARKS.md", f"inventory-{name}", lines)


@click.command()
@click.option("--data-root", default=str(ROOT.parent / "shared" / "data"), show_default=True)
@click.option("--work", default=str(ROOT / "runs" / "benchmark-inventory"), show_default=True)
@click.option("--datasets", default="walmart,store_item", show_default=True)
@click.option(
    "--systems",
    "chosen",
    default="snaive,ets,lightgbm,local,he",
    show_default=True,
    help="Systems whose forecasts are made in this run; the others are read from WORK if there.",
)
@click.option("--replay-only", is_flag=True, help="Make no forecasts: replay those kept in WORK.")
@click.option(
    "--forecast-only", is_flag=True, help="Make the chosen systems' forecasts, keep them in WORK; no replay."
)
@click.option("--seed", default=7, show_default=True)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--quick", is_flag=True, help="Walmart stores 1-8, lead 1, two trainings: under 10 minutes.")
def main(data_root, work, datasets, chosen, replay_only, forecast_only, seed, threads, quick) -> None:
    torch.set_num_threads(threads)
    command = (".venv/bin/python scripts/benchmark_inventory.py " + " ".join(sys.argv[1:])).strip()
    names = ["walmart"] if quick else datasets.split(",")
    known = dict.fromkeys(v[0] for v in ROWS.values())
    if unknown := set(chosen.split(",")) - set(known):
        raise click.BadParameter(f"unknown system {sorted(unknown)[0]!r}: choose from {', '.join(known)}")
    for name in names:
        if name not in systems.SETUPS:
            raise click.BadParameter(f"unknown dataset {name!r}: choose from {', '.join(systems.SETUPS)}")
        setup = systems.SETUPS[name]
        data = Path(data_root) / setup.folder
        out = Path(work) / (f"{name}-quick" if quick else name)
        out.mkdir(parents=True, exist_ok=True)
        if quick:
            data = _quick_data(data, out / "data")
            setup = systems.Setup(**{**setup.__dict__, "trainings": 2, "leads": (1,)})
        sales = load_sales(name, data)
        ctx = {
            "name": name,
            "setup": setup,
            "data": data,
            "work": out,
            "seed": seed,
            "sales": sales,
            "timeline": systems.Timeline.of(sales, name, setup),
            "leads": setup.leads,
            "steps": max(setup.leads) + 1,
            "rounds": 3 if quick else None,
            "run": set() if replay_only else set(chosen.split(",")),
        }
        if forecast_only:  # a part of a long run: the replay follows with --replay-only
            for system in sorted(ctx["run"]):
                panel(name, system, ctx)
            continue
        res, dc, figures, made = run_dataset(name, ctx)
        res.to_csv(out / "inventory.csv", index=False)
        dc.to_csv(out / "dc.csv", index=False)
        if quick:
            figs = target_figures(res, 1)
            print(
                json.dumps(
                    {
                        **{k: round(v, 4) for k, v in figs.items()},
                        "dc_interval_coverage80": round(figures["coverage80"]["calibrated"], 4),
                    }
                )
            )
            continue
        png = f"benchmarks/inventory_year_{name}.png"
        plot(res, name, setup.unit, ROOT / png)
        write_section(name, res, dc, figures, made, ctx, command, png)
        log(f"{name}: wrote {png} and BENCHMARKS.md")


def _quick_data(data: Path, out: Path) -> Path:
    """A copy of the Walmart tables with stores 1..QUICK_STORES only (kept in WORK, never shipped)."""
    out.mkdir(parents=True, exist_ok=True)
    for src in data.iterdir():
        if src.suffix == ".parquet":
            table = pd.read_parquet(src)
            if "Store" in table:
                table = table[table["Store"] <= QUICK_STORES]
            table.to_parquet(out / src.name, index=False)
    return out


if __name__ == "__main__":
    main()
