"""Forecast accuracy on real data: baselines and peers vs local, federated (plain, CKKS), centralized.

Walmart: history up to 2012-04-27, scored on the last 13 weeks of the shared file (2012-05-04 ..
2012-07-27): WMAE (holiday weeks ×5), MAE, mean pinball loss over the output quantiles, 80%
interval coverage (q10..q90). store_item: history up to 2017-07-04, scored on the last 90 days
(MAE, sMAPE). Every model mode holds out the last horizon BEFORE the cutoff and trains until its
own score there stops improving (the preset's patience), under one round cap; the scored window is
never seen. Per mode the tables give the rounds used, the 2-core wall time here and the wall time
of a deployment (sites in parallel: the slowest site per round, summed, plus the coordinator).
The peers (scripts/peers.py, `pip install -e '.[peers]'`) run on the same windows when installed.
Tables: median over seeds and the min..max spread, written to BENCHMARKS.md between markers.
Each row is recorded as soon as it is measured (WORK/accuracy.csv, replacing the same dataset,
method and seed), so a long benchmark splits into parts by --datasets, --modes and --seeds.
``--origin`` scores an earlier window instead (where settings are chosen) and writes nothing there.

    .venv/bin/python scripts/benchmark_accuracy.py                 # both datasets, 3 seeds
    .venv/bin/python scripts/benchmark_accuracy.py --quick         # smoke run: 1 seed, cap 2 rounds
    .venv/bin/python scripts/benchmark_accuracy.py --datasets walmart --dp 0.5,1.0   # + DP row
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import click
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.evaluation import current_commit, ets, score, seasonal_naive, write_marked_section
from common.public_data import DATASETS, load_sales
from coordinator.checkpoints import PROGRESS_FILE
from coordinator.planner.simulate import PRESETS, SimulationSettings, prepare_nodes, train_and_forecast

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "walmart": {
        "until": "2012-04-27",
        "freq": "W-FRI",
        "season": 52,
        "ets_season": 52,
        "level": 8,
        "holiday": "IsHoliday",
    },
    "store_item": {
        "until": "2017-07-04",
        "freq": "D",
        "season": 364,  # same weekday a year earlier
        "ets_season": 7,  # Holt-Winters over 364-day seasons is not practical; weekly season
        "level": 56,
        "holiday": None,
    },
}
MODEL_MODES = ("local", "plain", "he", "central")
FOLDERS = {"walmart": "walmart", "store_item": "store_item_demand"}  # under ../shared/data
LABELS = {
    "seasonal_naive": "seasonal naive (same period a season earlier)",
    "scaled_naive": "seasonal naive × recent level",
    "ets": "Holt-Winters ETS per series (statsmodels)",
    "local": "LSTM-attention, local only (each store alone)",
    "plain": "LSTM-attention, federated plaintext",
    "he": "LSTM-attention, federated CKKS (real ServerApp/ClientApp)",
    "central": "LSTM-attention, centralized (all data pooled)",
    "he-dp": "LSTM-attention, federated CKKS + differential privacy",
    "autoets": "statsforecast AutoETS per series (peer)",
    "lightgbm_store": "LightGBM quantile, per store (peer: a site alone)",
    "lightgbm_global": "LightGBM quantile, global (peer: all data pooled)",
}
PEERS = ("autoets", "lightgbm_store", "lightgbm_global")


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def baselines(name: str, history: pd.DataFrame, data: Path) -> dict[str, Callable[[], pd.DataFrame]]:
    ds, st = DATASETS[name], SETUPS[name]
    args = (history, list(ds.keys), ds.date, ds.target, st["freq"], ds.horizon, st["season"])
    methods = {
        "seasonal_naive": lambda: seasonal_naive(*args),
        "scaled_naive": lambda: seasonal_naive(*args, level_window=st["level"]),
        "ets": lambda: ets(*args[:-1], st["ets_season"]),
    }
    try:
        import lightgbm  # noqa: F401  (the peers need the optional extra)
        import statsforecast  # noqa: F401

        from scripts.peers import autoets, known_covariates, lightgbm_global, lightgbm_per_store
    except ImportError:
        log("peers skipped: pip install -e '.[peers]' (lightgbm, statsforecast)")
        return methods
    known = known_covariates(name, data)
    shape = (history, list(ds.keys), ds.date, ds.target, st["freq"], ds.horizon)
    return {
        **methods,
        "autoets": lambda: autoets(*shape, st["ets_season"]),
        "lightgbm_store": lambda: lightgbm_per_store(*shape, known=known),
        "lightgbm_global": lambda: lightgbm_global(*shape, known=known),
    }


def run_dataset(
    name: str,
    data: Path,
    work: Path,
    seeds: list[int],
    rounds: int | None,
    dp: tuple[float, float] | None = None,
    modes: tuple[str, ...] = MODEL_MODES,
    origin: str | None = None,
    with_baselines: bool = True,
    keep: Callable[[dict], None] = lambda row: None,
    changes: tuple[tuple[str, object], ...] = (),
) -> list[dict]:
    """Baselines, peers and the model modes (baselines and peers only with every mode); with ``dp``
    (clip, noise multiplier) only CKKS + DP. ``origin``: train up to it and score the horizon after
    it instead of the benchmark window; ``rounds``: the round cap (None: the preset's); ``keep``
    records each row as soon as it is measured, so a run cut short keeps what it finished;
    ``changes``: run-config keys set over the preset (a candidate setting tried at an origin)."""
    ds, st = DATASETS[name], SETUPS[name]
    sales = load_sales(name, data)
    until = origin or st["until"]
    cut = pd.Timestamp(until)
    history, actuals = sales[sales[ds.date] <= cut], sales[sales[ds.date] > cut]
    dates = sorted(actuals[ds.date].unique())[: ds.horizon]
    actuals = actuals[actuals[ds.date].isin(dates)]
    if len(dates) != ds.horizon:
        raise SystemExit(f"{name}: expected {ds.horizon} periods after {cut.date()}, found {len(dates)}")
    keys = list(ds.keys)

    def evaluate(method: str, seed: int | None, fc: pd.DataFrame, seconds: float, **extra) -> dict:
        row = {"dataset": name, "method": method, "seed": seed, "seconds": round(seconds, 1), **extra}
        row.update(score(actuals, fc, keys, ds.date, ds.target, st["holiday"]))
        log(f"{name} {method} seed={seed}: " + json.dumps({k: row[k] for k in row if k not in ("dataset",)}))
        keep(row)
        return row

    rows = []
    for method, make in baselines(name, history, data).items() if dp is None and with_baselines else ():
        started = time.monotonic()
        fc = make()
        rows.append(evaluate(method, None, fc, time.monotonic() - started))
    overrides = changes if dp is None else (*changes, ("dp-clip", dp[0]), ("dp-noise", dp[1]))
    if not modes:
        return rows
    if work.exists():
        shutil.rmtree(work)
    base = SimulationSettings(name, data, until=until, rounds=rounds)
    nodes = prepare_nodes(base, work, log)
    for seed in seeds:
        for mode in modes if dp is None else ("he",):
            s = SimulationSettings(
                name, data, mode=mode, rounds=rounds, seed=seed, until=until, overrides=overrides
            )
            t0 = time.monotonic()
            fc, outcome = train_and_forecast(nodes, s, work, log)
            extra = {}
            if dp is not None:
                privacy = json.loads((work / "checkpoints" / PROGRESS_FILE).read_text())["privacy"]
                extra = {f"dp_{k}": privacy[k] for k in ("clip", "noise_multiplier", "nodes", "epsilon")}
            row = evaluate(
                mode if dp is None else "he-dp",
                seed,
                fc,
                time.monotonic() - t0,
                rounds_used=outcome.rounds,
                best_round=outcome.best_round,
                stop_reason=outcome.reason,
                deployment_seconds=round(outcome.deployment_seconds, 1),
                **extra,
            )
            rows.append(row)
            if (work / "checkpoints").exists():
                shutil.rmtree(work / "checkpoints")
    return rows


def _fmt(values: pd.Series, digits: int) -> str:
    med, lo, hi = values.median(), values.min(), values.max()
    if values.isna().all():
        return "—"
    if len(values.dropna()) == 1 or lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}..{hi:.{digits}f})"


def table(rows: pd.DataFrame, name: str) -> str:
    metrics = (
        [("wmae", 1), ("mae", 1), ("pinball", 1), ("coverage_80", 3)]
        if name == "walmart"
        else [("mae", 3), ("smape", 2), ("pinball", 3), ("coverage_80", 3)]
    )
    sub = rows[rows["dataset"] == name]
    if sub.empty:
        return "(not run)"
    naive_key = "wmae" if name == "walmart" else "mae"
    naive = sub.loc[sub["method"] == "seasonal_naive", naive_key].median()
    head = ["method", "seeds", *[m for m, _ in metrics], f"{naive_key} / naive", "rounds (best)", "seconds"]
    head.append("deployment s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in LABELS:
        g = sub[sub["method"] == method]
        if g.empty:
            continue
        cells = [LABELS[method], str(g["seed"].notna().sum() or "—")]
        cells += [_fmt(g[m], d) if m in g else "—" for m, d in metrics]
        cells += [_fmt(g[naive_key] / naive, 3), _rounds(g), f"{g['seconds'].median():.0f}", _deployment(g)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rounds(g: pd.DataFrame) -> str:
    if "rounds_used" not in g or g["rounds_used"].isna().all():
        return "—"
    return ", ".join(f"{int(u)} ({int(b)})" for u, b in zip(g["rounds_used"], g["best_round"], strict=True))


def _deployment(g: pd.DataFrame) -> str:
    if "deployment_seconds" not in g or g["deployment_seconds"].isna().all():
        return "—"
    return f"{g['deployment_seconds'].median():.0f}"


def _check(label: str, value: float, bound: float) -> str:
    return f"| {label} | {value:.4f} | {'yes' if value <= bound else '**no**'} |"


def targets(rows: pd.DataFrame, name: str) -> str:
    """The convergence issue's targets, from the medians of this run's rows."""
    sub = rows[rows["dataset"] == name]
    if not {"he", "plain"} <= set(sub["method"]):
        return ""
    key = "wmae" if name == "walmart" else "mae"
    med = sub.groupby("method")[key].median()
    lines = ["| target | measured | met |", "|---|---|---|"]
    if name == "walmart":
        if "lightgbm_global" in med:
            lines.append(
                _check("CKKS WMAE ≤ global LightGBM of this run", med["he"] / med["lightgbm_global"], 1.0)
            )
        if "local" in med:
            lines.append(_check("CKKS WMAE ≤ 0.95 × local-only", med["he"] / med["local"], 0.95))
    else:
        if "central" in med:
            lines.append(_check("CKKS MAE ≤ 1.03 × centralized", med["he"] / med["central"], 1.03))
        lines.append(_check("CKKS MAE ≤ 0.85 × seasonal naive", med["he"] / med["seasonal_naive"], 0.85))
    paired = sub.pivot_table(index="seed", columns="method", values=key)
    he_vs_plain = float(((paired["he"] - paired["plain"]).abs() / paired["plain"]).max())
    lines.append(_check(f"abs(CKKS − plaintext) ≤ 0.5% {key.upper()}, worst seed", he_vs_plain, 0.005))
    cov = sub.groupby("method")["coverage_80"].median()["he"]
    met = 0.76 <= cov <= 0.84
    lines.append(f"| 80% coverage in [0.76, 0.84] | {cov:.3f} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)


def section(rows: pd.DataFrame, name: str, title: str) -> list[str]:
    sub = rows[rows["dataset"] == name]
    if sub.empty:
        return [f"### {title}", "", "(not run yet)", ""]
    first = sub.iloc[0]
    seeds = sorted(int(s) for s in sub["seed"].dropna().unique())
    return [
        f"### {title}",
        "",
        f"Commands: {_commands(sub)} (torch threads: {_threads(sub)}); seeds {seeds}; round cap "
        f"{_cap(first)}, each model mode stopping "
        "when its own validation score stops improving (the preset's patience)"
        f"{' (quick smoke settings, not a result)' if bool(first['quick']) else ''}.",
        "",
        table(rows, name),
        "",
        *dp_note(sub),
    ]


def _commands(sub: pd.DataFrame) -> str:
    return "; ".join(f"`{c}`" for c in dict.fromkeys(sub["command"].astype(str)))


def _threads(sub: pd.DataFrame) -> str:
    if "threads" not in sub:
        return "2"
    return ", ".join(str(int(t)) for t in sorted(set(sub["threads"].dropna())))


def _cap(first: pd.Series) -> str:
    cap = first.get("rounds")
    return "the preset's" if pd.isna(cap) else str(int(cap))


def dp_note(sub: pd.DataFrame) -> list[str]:
    dp = sub[sub["method"] == "he-dp"]
    if dp.empty:
        return []
    first = dp.iloc[0]
    return [
        f"Differential privacy row: command `{first['command']}`; each node clips its update to L2 "
        f"norm {first['dp_clip']:g} and adds its share of Gaussian noise so that the sum of "
        f"{int(first['dp_nodes'])} updates carries noise multiplier {first['dp_noise_multiplier']:g}: "
        f"(ε = {first['dp_epsilon']:.2f}, δ = 1e-5) over {int(first['rounds_used'])} rounds (node-level, "
        "RDP accountant of `dp_accounting`).",
        "",
    ]


def write_markdown(rows: pd.DataFrame) -> None:
    """Each dataset has its own marked section, so a run of one dataset keeps the other's tables."""
    hardware = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, CPU only"

    def written(name: str) -> str:
        """Rows kept from an earlier run name the commit they were measured at, not this one's."""
        sub = rows[rows["dataset"] == name]
        commits = sorted(set(sub["commit"].dropna().astype(str))) if "commit" in sub else []
        return (
            f"Written by `scripts/benchmark_accuracy.py` on {time.strftime('%Y-%m-%d')}; rows measured "
            f"at commit {', '.join(commits) or '?'}; {hardware} (no GPU was lent to this task, so GPU "
            "training throughput is not measured)."
        )

    if (rows["dataset"] == "walmart").any():
        body = [
            "## Forecast accuracy on real data",
            "",
            f"{written('walmart')} Cells: median over seeds (min..max). Every model mode holds out the "
            "last 13 weeks before the cutoff and trains round after round (a round: one pass of at most "
            "`max-batches` batches per node; centralized: all nodes' batches; local-only: its own) until "
            "its own validation score there stops improving, then forecasts with its best round's model. "
            "`rounds (best)`: rounds trained (the round kept), per seed; `seconds`: wall time here, sites "
            "one after another on 2 cores; `deployment s`: sites in parallel (each round's slowest site, "
            "plus the coordinator). Model settings: "
            f"the preset `coordinator/planner/presets/walmart.toml` ({json.dumps(PRESETS['walmart'])}). "
            "Weather, "
            "fuel, CPI and unemployment are fed as past-only inputs (no oracle); markdowns and "
            "holidays as known-future inputs. Walmart nodes keep one-off spikes (`cap_outliers = "
            "false` in their `[data]`).",
            "",
            *section(
                rows, "walmart", "Walmart, 45 stores = 45 nodes; train ≤ 2012-04-27, score 2012-05-04..07-27"
            ),
            targets(rows, "walmart"),
        ]
        write_marked_section(ROOT / "BENCHMARKS.md", "accuracy", body)
    if (rows["dataset"] == "store_item").any():
        body = [
            *section(
                rows, "store_item", "store_item, 10 stores = 10 nodes; train ≤ 2017-07-04, score 90 days"
            ),
            targets(rows, "store_item"),
            "",
            f"{written('store_item')} Model settings: the preset "
            f"`coordinator/planner/presets/store_item.toml` ({json.dumps(PRESETS['store_item'])}).",
        ]
        write_marked_section(ROOT / "BENCHMARKS.md", "accuracy-store_item", body)


@click.command()
@click.option("--data-root", default=str(ROOT.parent / "shared" / "data"), show_default=True)
@click.option("--work", default=str(ROOT / "runs" / "benchmark-accuracy"), show_default=True)
@click.option("--seeds", default="7,8,9", show_default=True)
@click.option("--rounds", default=None, type=int, help="Round cap [default: the preset's].")
@click.option("--datasets", default="walmart,store_item", show_default=True)
@click.option("--quick", is_flag=True, help="1 seed, a cap of 2 rounds: a smoke check, not a result.")
@click.option(
    "--origin",
    default=None,
    help="YYYY-MM-DD: train up to this date and score the horizon after it (a window before the "
    "benchmark's, where settings are chosen); rows go to WORK/origins.csv, not BENCHMARKS.md.",
)
@click.option("--report-only", is_flag=True, help="Rewrite BENCHMARKS.md from WORK/accuracy.csv.")
@click.option(
    "--dp",
    default=None,
    help="CLIP,NOISE: run only federated CKKS with differential privacy; other rows are kept.",
)
@click.option(
    "--modes",
    default=",".join(("baselines", *MODEL_MODES)),
    show_default=True,
    help="Model modes to run, and `baselines` (seasonal naive, ETS and the peers); the rows of what "
    "is not run are kept from earlier runs.",
)
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="torch threads of every model mode (1: two parts of the benchmark can share 2 cores).",
)
@click.option(
    "--set",
    "changes",
    multiple=True,
    callback=lambda ctx, param, value: _changes(value),
    help="KEY=VALUE over the preset's run config (e.g. server-optimizer=fedavgm), a candidate "
    "setting tried at an --origin; only with --origin, so the benchmark tables run the presets.",
)
def main(
    data_root: str,
    work: str,
    seeds: str,
    rounds: int,
    datasets: str,
    quick: bool,
    report_only: bool,
    dp: str | None,
    modes: str,
    origin: str | None,
    threads: int,
    changes: tuple[tuple[str, object], ...],
) -> None:
    if changes and not origin:
        raise click.UsageError("--set needs --origin: settings are tried before the scored window")
    if report_only:
        write_markdown(pd.read_csv(Path(work) / "accuracy.csv"))
        return
    seed_list = [int(s) for s in seeds.split(",")][: 1 if quick else None]
    rounds = 2 if quick else rounds
    torch.set_num_threads(threads)
    command = (".venv/bin/python scripts/benchmark_accuracy.py " + " ".join(sys.argv[1:])).strip()
    commit = current_commit(ROOT)
    stamp = {"command": command, "rounds": rounds, "quick": quick, "commit": commit, "threads": threads}
    for name in datasets.split(","):
        folder = Path(data_root) / FOLDERS[name]
        dp_pair = tuple(float(v) for v in dp.split(",")) if dp else None
        asked = modes.split(",")
        if not asked or set(asked) - {"baselines", *MODEL_MODES}:
            raise click.BadParameter(f"choose from baselines,{','.join(MODEL_MODES)}", param_hint="--modes")
        chosen = tuple(m for m in MODEL_MODES if m in asked)
        keep = partial(_keep, Path(work), {**stamp, **({"origin": origin} if origin else {})})
        run_dataset(
            name,
            folder,
            Path(work) / name / "-".join(map(str, [*chosen, *seed_list])),  # parts run side by side
            seed_list,
            rounds,
            dp_pair,
            chosen,
            origin,
            "baselines" in asked,
            keep,
            changes,
        )


def _changes(pairs: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """``key=value`` pairs, numbers parsed as numbers."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        try:
            out.append((key, int(value) if value.lstrip("-").isdigit() else float(value)))
        except ValueError:
            out.append((key, value))
    return tuple(out)


def _keep(work: Path, stamp: dict, row: dict) -> None:
    """Record one measured row: an origin row is appended to WORK/origins.csv; a benchmark row
    replaces the row of the same dataset, method and seed in WORK/accuracy.csv (other rows, also
    those of another run sharing the file, are kept) and BENCHMARKS.md is rewritten from it."""
    work.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{**row, **stamp}])
    table_file = work / ("origins.csv" if "origin" in stamp else "accuracy.csv")
    with open(work / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the parts of a split benchmark may finish together
        if table_file.is_file():
            old = pd.read_csv(table_file)
            same = (old["dataset"] == row["dataset"]) & (old["method"] == row["method"])
            same &= old["seed"].isna() if row["seed"] is None else old["seed"] == row["seed"]
            frame = pd.concat([old if "origin" in stamp else old[~same], frame], ignore_index=True)
        frame.to_csv(table_file, index=False)
        if "origin" not in stamp:
            write_markdown(frame)
    log(f"recorded {row['dataset']} {row['method']} seed={row['seed']} in {table_file}")


if __name__ == "__main__":
    main()
