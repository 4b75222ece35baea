"""fedstock-planner: the central planner's commands.

certs (TLS and SuperNode keys), demo, resume, simulate, report; and, against a real
SuperLink, run, status and network-forecast (coordinator/planner/console.py), and site, which
registers and removes the sites allowed to join (coordinator/planner/sites.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from common.cli_errors import one_line_errors
from coordinator.planner import control
from coordinator.planner.console import (
    dependence_option,
    find_run,
    keys_option,
    min_sites_option,
    network_forecast_cmd,
    planner_keys,
    run_cmd,
    runs_option,
    status_cmd,
)
from coordinator.planner.dc import dc_replenish_cmd
from coordinator.planner.demo import DemoSettings, resume_demo, run_demo
from coordinator.planner.runs import progress
from coordinator.planner.simulate import MODES, OUTCOME_FILE, SimulationSettings, simulate
from coordinator.planner.sites import site
from coordinator.planner.superlink import superlink_cmd

console = Console(stderr=True)


@click.group()
def cli() -> None:
    """Central planner: run and watch the federation. It holds no secret key: the CKKS key pair
    is made at a site (`fedstock-node keygen`)."""


@cli.command()
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files."
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=("127.0.0.1", "localhost"),
    show_default=True,
    help="Address the SuperLink is reached at (repeat): its certificate is valid for these.",
)
@click.option("--node", "node_names", multiple=True, hidden=True)
@one_line_errors
def certs(out_dir: str, hosts: tuple[str, ...], node_names: tuple[str, ...]) -> None:
    """Make the federation's CA and the SuperLink certificate (TLS). Each site makes its own
    SuperNode key pair (`fedstock-node authkey`) and sends only its public key."""
    from coordinator.planner.certs import make_certificates

    if node_names:
        raise click.UsageError(
            "--node: the planner makes no site's key any more; each site runs `fedstock-node authkey` "
            "and sends you its .pub file for `fedstock-planner site add`"
        )
    out = Path(out_dir)
    try:
        make_certificates(out, list(hosts))
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"CA {out / 'ca.crt'}; SuperLink certificate {out / 'server.pem'} for {', '.join(hosts)}")
    console.print(f"give each site {out / 'ca.crt'}; keep {out / 'ca.key'} here")


def _clock() -> Callable[[str], None]:
    start = time.monotonic()

    def report(line: str) -> None:
        console.print(f"[dim]{time.monotonic() - start:6.1f}s[/dim] {line}")

    return report


def _summary(outputs: dict, out: Path, seconds: float) -> None:
    rounds = outputs["rounds"]
    table = Table(title="federated rounds (aggregates opened by the sites)")
    for col in ("round", "train_pinball", "holdout_mae", "naive_mae", "mae_vs_naive", "coverage_80"):
        table.add_column(col, justify="right")
    for _, r in rounds.iterrows():
        table.add_row(
            str(int(r["round"])),
            *(
                f"{r.get(c, float('nan')):.3f}"
                for c in ("train_pinball", "holdout_mae", "naive_mae", "mae_vs_naive", "coverage_80")
            ),
        )
    console.print(table)
    outcome = progress(out / "checkpoints").get("outcome", {})
    best = outcome.get("best_round")
    console.print(f"stopped after round {outcome.get('round', best)}: {outcome.get('reason', 'round cap')}")
    console.print(
        f"the sites forecast with round {best}'s global model, the best on the federation's hold-out window"
    )
    shown = rounds[rounds["round"] == best] if len(rounds) else rounds
    if not len(shown):  # the sites did not open that round's sums (too few agreed, or refused)
        console.print(f"round {best}'s metrics were not opened by the sites: see checkpoints/progress.json")
        return _counts(outputs, out, seconds)
    last = shown.iloc[0]
    console.print(
        f"hold-out accuracy: model MAE {last['holdout_mae']:.2f} vs seasonal naive "
        f"{last['naive_mae']:.2f} ({(1 - last['mae_vs_naive']) * 100:+.1f}% better), "
        f"80% interval coverage {last['coverage_80']:.1%}"
    )
    _counts(outputs, out, seconds)


def _counts(outputs: dict, out: Path, seconds: float) -> None:
    console.print(f"decisions: {outputs['decisions']['status'].value_counts().to_dict()}")
    console.print(
        f"availability: {outputs['strategy']['availability'].value_counts().to_dict()}; "
        f"promotion: {outputs['strategy']['promotion'].value_counts().to_dict()}"
    )
    console.print(
        f"outputs in {out}: forecasts.parquet, decisions.csv, strategy.csv, rounds.csv, "
        f"keys/, checkpoints/ ({seconds:.0f}s)"
    )
    console.print(
        f"reports: {out / 'report.html'} (the planner's); each site's morning report in "
        f"{out / 'nodes' / '*' / 'out' / 'report.html'}"
    )


@cli.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(2, 64))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--local-epochs", default=None, type=click.IntRange(1, 50), help="[default: the run config's, 2]"
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Empty or new folder for all outputs [default: runs/demo-<time>].",
)
@click.option(
    "--engine",
    default="deployment",
    show_default=True,
    type=click.Choice(["deployment", "inprocess"]),
    help="deployment: real SuperLink + SuperNodes on loopback; inprocess: same apps, one process.",
)
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--tls", is_flag=True, help="TLS with a CA made for this run, and SuperNode authentication (deployment)."
)
@one_line_errors
def demo(
    nodes: int, rounds: int, local_epochs: int | None, out_dir: str, engine: str, seed: int, tls: bool
) -> None:
    """Run a demo federation on built-in synthetic warehouses, end to end."""
    start = time.monotonic()
    out_dir = out_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = DemoSettings(
        nodes=nodes, rounds=rounds, local_epochs=local_epochs, engine=engine, seed=seed, tls=tls
    )

    try:
        outputs = run_demo(Path(out_dir), settings, _clock())
    except (RuntimeError, TimeoutError, FileExistsError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    _summary(outputs, Path(out_dir).resolve(), time.monotonic() - start)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@one_line_errors
def resume(run_dir: str) -> None:
    """Continue a demo run from its last intact encrypted checkpoint (after the coordinator died)."""
    start = time.monotonic()
    try:
        outputs = resume_demo(Path(run_dir), _clock())
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    _summary(outputs, Path(run_dir).resolve(), time.monotonic() - start)


@cli.command("simulate")
@click.option("--dataset", required=True, type=click.Choice(["walmart", "store_item"]))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder with the dataset's tables (e.g. ../shared/data/walmart): sales, features and "
    "stores as Parquet or CSV; Kaggle's own train.csv, features.csv and stores.csv work as they are.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Empty or new RUN_DIR."
)
@click.option(
    "--mode",
    default="he",
    show_default=True,
    type=click.Choice(MODES),
    help="he: real apps with CKKS; plain: same rounds unencrypted; local: each node alone; "
    "central: all data pooled.",
)
@click.option(
    "--rounds",
    default=None,
    type=click.IntRange(1, 200),
    help="Round cap [default: the preset's, 40]; every mode stops earlier when its validation "
    "score on the last held-out horizon stops improving.",
)
@click.option("--seed", default=None, type=int, help="[default: the run config's, 7]")
@click.option(
    "--until",
    default=None,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Use history up to this date (YYYY-MM-DD) only, holding out what follows.",
)
@click.option(
    "--dp-clip",
    default=None,
    type=click.FloatRange(min=0),
    help="he mode: differential privacy, L2 clip of each node's update (0 = off, the default); "
    "turns cross-site denoising off, which the privacy accounting does not cover.",
)
@click.option(
    "--dp-noise",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Noise multiplier of the summed updates [default: the run config's, 1.0].",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where every node (and centralized training) trains: cpu, cuda or cuda:N; written to "
    "each node's node.toml [training] device.",
)
@one_line_errors
def simulate_cmd(
    dataset: str,
    data_dir: str,
    out_dir: str,
    mode: str,
    rounds: int | None,
    seed: int | None,
    until: datetime | None,
    dp_clip: float | None,
    dp_noise: float | None,
    device: str,
) -> None:
    """Federate one node per store of a public dataset; write RUN_DIR/forecasts.parquet."""
    if dp_clip and mode != "he":
        raise click.UsageError("--dp-clip needs --mode he (privacy applies to the encrypted federation)")
    given = (("dp-clip", dp_clip), ("dp-noise", dp_noise))
    overrides = tuple((k, v) for k, v in given if v is not None) if dp_clip else ()
    cut = until.strftime("%Y-%m-%d") if until else None
    try:
        settings = SimulationSettings(dataset, Path(data_dir), mode, rounds, seed, cut, overrides, device)
        result = simulate(Path(out_dir), settings, _clock())
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    console.print(f"wrote {Path(out_dir).resolve() / 'forecasts.parquet'} ({len(result)} rows)")
    outcome = json.loads((Path(out_dir) / OUTCOME_FILE).read_text())
    console.print(
        f"{mode}: stopped after round {outcome['rounds']} ({outcome['reason']}); forecasts from round "
        f"{outcome['best_round']}'s model; {outcome['seconds']:.0f}s here, about "
        f"{outcome['deployment_seconds']:.0f}s with the sites training in parallel"
    )
    privacy = progress(Path(out_dir) / "checkpoints").get("privacy")
    if privacy:
        console.print(
            f"differential privacy: (ε = {privacy['epsilon']:.2f}, δ = {privacy['delta']:g}) over "
            f"{privacy['rounds']} rounds, {privacy['nodes']} nodes, "
            f"noise multiplier {privacy['noise_multiplier']:g}"
        )


@cli.command()
@click.argument("run", required=False)
@keys_option
@runs_option
@click.option(
    "--out", "out_path", default=None, type=click.Path(dir_okay=False), help="Default RUN/report.html."
)
@click.option(
    "--dc",
    "dc_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Where dc-replenish wrote the DC's decisions (default RUN/dc).",
)
@min_sites_option
@dependence_option
@one_line_errors
def report(
    run: str | None,
    keys_dir: str,
    runs_dir: str,
    out_path: str | None,
    dc_dir: str | None,
    min_sites: int,
    dependence: str,
) -> None:
    """Write the planner's HTML report of RUN (a run id under --runs, the latest by default, or a
    demo's or simulation's folder): rounds, who answered, stopping, privacy, the network forecast
    and the DC's decisions; aggregates over sites only."""
    from coordinator.planner.report import build_planner_report

    run_dir = find_run(run, Path(runs_dir))
    keys = Path(keys_dir)
    if not keys.is_dir() and (run_dir.parent / "keys").is_dir():  # a demo's or simulation's folder
        keys = run_dir.parent / "keys"
    key, _ = planner_keys(keys)
    path = build_planner_report(
        run_dir,
        Path(out_path) if out_path else None,
        key.fingerprint,
        control.site_names(Path(runs_dir).resolve()),
        Path(dc_dir) if dc_dir else None,
        min_sites,
        dependence,
    )
    console.print(f"report written: {path}")


for command in (run_cmd, status_cmd, network_forecast_cmd, dc_replenish_cmd, site, superlink_cmd):
    cli.add_command(command)
