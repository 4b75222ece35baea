"""fedstock-planner run / status / network-forecast: a federation on a real SuperLink, watched.

The run is submitted with Flower's ``flwr run`` (coordinator/planner/control.py). Its results land in
RUNS/RUN_ID, written by the ServerApp on the SuperLink's host; the planner's console runs there (or
reads that folder over a mount). It holds no secret key: the aggregates it shows were opened by the
sites (coordinator/publish.py); its keys folder holds public.ctx and keys.json only.
"""

from __future__ import annotations

import json
import sys
import time
import tomllib
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import crypto
from common.cli_errors import one_line_errors
from common.files import check_output, write_json_atomic
from common.network import DEFAULT_DEPENDENCE, DEPENDENCE, MIN_SITES, Layout
from common.settings import APP_DIR, Settings, SettingsError, app_defaults
from common.tables import output_table, write_table
from coordinator.checkpoints import PROGRESS_FILE
from coordinator.planner import control
from coordinator.planner.runs import STARTED_FILE, fan_chart, network_forecast, progress, run_status

console = Console(stderr=True)

runs_option = click.option(
    "--runs",
    "runs_dir",
    envvar="FEDSTOCK_RUNS",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The runs folder: RUNS/RUN_ID holds each run's encrypted results [env FEDSTOCK_RUNS].",
)
keys_option = click.option(
    "--keys",
    "keys_dir",
    envvar="FEDSTOCK_KEYS",
    default="keys",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder with the federation's public.ctx and keys.json, from the key steward "
    "(`fedstock-node keygen`); never secret.ctx [env FEDSTOCK_KEYS].",
)


def planner_keys(keys_dir: str | Path) -> tuple[crypto.KeyContext, Path]:
    """The federation's public context (checked against keys.json) and its path, which the
    coordinator gets. A keys folder holding a secret context is refused: it stays at the sites."""
    keys = Path(keys_dir)
    if (keys / crypto.SECRET_CONTEXT_FILE).exists():
        raise crypto.CryptoError(
            f"{keys / crypto.SECRET_CONTEXT_FILE}: the planner holds no secret key; remove it from "
            "this folder (only the sites keep it)"
        )
    return crypto.load_public(keys), (keys / crypto.PUBLIC_CONTEXT_FILE).resolve()


def _user_run_config(path: str | None, app: Path) -> dict:
    if not path:
        return {}
    try:
        values = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"--run-config {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(values) - control.app_config_keys(app))
    if unknown:
        raise click.ClickException(f"--run-config {path}: unknown run-config keys: {', '.join(unknown)}")
    return values


def _round_line(r: dict) -> str:
    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    line = f"round {r['round']}: {len(r['trained'])} nodes trained, loss {num(r['train_loss'])}"
    if r["evaluated"]:
        line += f"; {len(r['evaluated'])} validated, loss {num(r['validation_loss'])}"
        line += f", MAE {num(r['validation_mae'])} vs naive {num(r['naive_mae'])}"
    if r.get("decision"):
        line += f"; the sites decided: {r['decision']}"
    return line + (f"; {len(r['refused'])} replies refused" if r["refused"] else "")


def follow(runs: Path, run_id: int, folder: Path, fingerprint: str, poll: float = 3.0) -> dict:
    """Show each round as the ServerApp finishes it, until Flower reports the run finished."""
    printed: set[int] = set()
    entries = -1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"run {run_id}: rounds", total=None)
        while True:
            info = control.run_info(runs, run_id)
            finished = str(info.get("status", "")).startswith("finished")
            history = progress(folder).get("history", [])
            if len(history) != entries or finished:
                entries = len(history)
                status = run_status(folder, fingerprint)
                for r in status["rounds"]:
                    opened = r["opened_by"] is not None  # the sites opened (or refused) its sums
                    if r["round"] not in printed and (opened or r["round"] < status["rounds_done"]):
                        bar.console.print(_round_line(r))
                        printed.add(r["round"])
                bar.update(task, completed=status["rounds_done"], total=status["rounds_planned"])
            if finished:
                return info
            time.sleep(poll)


@click.command("run")
@click.option("--superlink", required=True, help="HOST:PORT of the federation's SuperLink.")
@click.option(
    "--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA of the SuperLink's certificate."
)
@click.option("--insecure", is_flag=True, help="No TLS: for a test network on one machine only.")
@keys_option
@runs_option
@click.option(
    "--rounds",
    type=click.IntRange(1, 1000),
    default=None,
    help="Round cap; the sites stop earlier when their validation score stops improving "
    "(stop-patience in the run config) [app default: 40].",
)
@click.option("--min-nodes", type=click.IntRange(1), default=None, help="Replies a round needs [default: 2].")
@click.option(
    "--run-config",
    "run_config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML of further run-config values (model and training settings, see pyproject.toml).",
)
@click.option("--network/--no-network", default=True, show_default=True, help="Network forecast at the end.")
@click.option("--network-group", default="", help="Series key to break the network forecast down by.")
@click.option("--network-groups", default="", help="That key's values, comma-separated.")
@click.option(
    "--min-sites",
    type=click.IntRange(MIN_SITES),
    default=None,
    help="Fewest sites of a network sum [default: the run config's network-min-sites, 3].",
)
@click.option(
    "--resume", "resume_run", type=int, default=None, help="Continue RUN_ID from its last checkpoint."
)
@click.option("--detach", is_flag=True, help="Print the run id and return at once.")
@click.option(
    "--app",
    "app_dir",
    envvar="FEDSTOCK_APP",
    default=str(APP_DIR),
    type=click.Path(exists=True, file_okay=False),
    help="Folder of the Flower app (fedstock's pyproject.toml) [env FEDSTOCK_APP; default: this install].",
)
@one_line_errors
def run_cmd(
    superlink: str,
    tls_ca: str | None,
    insecure: bool,
    keys_dir: str,
    runs_dir: str,
    rounds: int | None,
    min_nodes: int | None,
    run_config_path: str | None,
    network: bool,
    network_group: str,
    network_groups: str,
    min_sites: int | None,
    resume_run: int | None,
    detach: bool,
    app_dir: str,
) -> None:
    """Start a federation run on an existing SuperLink (through `flwr run`) and follow it."""
    if bool(tls_ca) == insecure:
        raise click.ClickException("pass --tls-ca FILE, or --insecure for a test network (not both)")
    key, public = planner_keys(keys_dir)
    runs = Path(runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    app = Path(app_dir)
    control.app_config_keys(app)  # the right folder, before anything is submitted
    rc = {**_user_run_config(run_config_path, app), "public-context": str(public), "runs-dir": str(runs)}
    rc.update({k: v for k, v in (("num-rounds", rounds), ("min-nodes", min_nodes)) if v is not None})
    if network:
        Layout.of(network_group, network_groups, 1)  # refused here, not by every node mid-run
        rc["network-forecast"] = True
        rc.update({} if min_sites is None else {"network-min-sites": min_sites})
        rc.update({"network-group": network_group, "network-groups": network_groups})
    if resume_run is not None:
        if not (runs / str(resume_run)).is_dir():
            raise click.ClickException(f"--resume {resume_run}: no such run in {runs}")
        rc.update({"checkpoint-dir": str(runs / str(resume_run)), "resume": True})
    try:  # a wrong type or range is refused here, by key, before anything is submitted
        planned = {**app_defaults(app.resolve()), **rc}
        Settings.of(planned)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    control.connect(runs, superlink, Path(tls_ca) if tls_ca else None)
    run_id = control.start_run(runs, rc, app)
    print(run_id, flush=True)
    folder = runs / str(resume_run if resume_run is not None else run_id)
    started = {"run": run_id, "superlink": superlink, "time": time.time(), "rounds": planned["num-rounds"]}
    write_json_atomic(folder / STARTED_FILE, started)  # `status` shows it before round 1 ends
    console.print(f"run {run_id} started on {superlink}; encrypted results in {folder}")
    if detach:
        return
    try:
        info = follow(runs, run_id, folder, key.fingerprint)
    except KeyboardInterrupt:
        console.print(f"stopped following; run {run_id} goes on: fedstock-planner status {folder.name}")
        sys.exit(130)
    if info.get("status") != "finished:completed":
        raise click.ClickException(f"run {run_id} {info.get('status')}: {info.get('status-details', '')}")
    _print_status(run_status(folder, key.fingerprint), info)


def _marker(folder: Path) -> Path | None:
    """What shows a run's folder is a run: its progress, or the note ``run`` leaves at the start."""
    return next((folder / n for n in (PROGRESS_FILE, STARTED_FILE) if (folder / n).is_file()), None)


def _latest_run(runs: Path) -> str:
    found = [p for p in runs.iterdir() if p.is_dir() and _marker(p)] if runs.is_dir() else []
    if not found:
        raise click.ClickException(f"no runs in {runs}")
    return max(found, key=lambda p: _marker(p).stat().st_mtime).name  # not a report written later


def find_run(run: str | None, runs: Path) -> Path:
    """The folder of a run: RUNS/RUN, or RUN itself as a folder holding progress.json (or its
    checkpoints/ holding it: a demo's or simulation's folder); the latest run under RUNS without RUN."""
    runs = Path(runs).resolve()
    if run is None:
        return runs / _latest_run(runs)
    as_path = "/" in run or Path(run).exists()
    tried = [Path(run), Path(run) / "checkpoints"] if as_path else [runs / run]
    for folder in tried:
        if _marker(folder):
            return folder.resolve()
    raise click.ClickException(f"no run {run}: no {PROGRESS_FILE} in {' or '.join(map(str, tried))}")


def _with_site_names(status: dict, names: dict[int, str]) -> dict:
    """Name the nodes of each round by the sites registered with ``site add``, and list the
    registered sites that did not train in it."""
    if not names:
        return status
    for r in status["rounds"]:
        trained = {int(n) for n in r["trained"]}
        r["trained_sites"] = [names.get(int(n), str(n)) for n in r["trained"]]
        r["sites_not_trained"] = sorted(name for node, name in names.items() if node not in trained)
    return {**status, "sites": {str(k): v for k, v in names.items()}}


def _print_status(status: dict, info: dict | None) -> None:
    flower = (info or {}).get("status", "unknown")
    console.print(
        f"run {status['run']}: {flower}; rounds {status['rounds_done']} of at most {status['rounds_planned']}"
    )
    if status.get("started") and not status["rounds"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["started"]["time"]))
        console.print(
            f"started {when} on {status['started']['superlink']}; round 1 in progress (each round is "
            "shown once the coordinator has checkpointed it)"
        )
    if status.get("best_round"):
        console.print(
            f"stopped: {status['stop_reason']}; the sites forecast with round {status['best_round']}'s model"
        )
    table = Table(title="rounds (aggregates opened by the sites)")
    for col in (
        "round",
        "trained",
        "validated",
        "train loss",
        "valid. loss",
        "valid. MAE",
        "naive MAE",
        "decision",
        "refused",
    ):
        table.add_column(col, justify="right")
    for r in status["rounds"]:
        cells = (r["train_loss"], r["validation_loss"], r["validation_mae"], r["naive_mae"])
        table.add_row(
            str(r["round"]),
            str(len(r["trained"])),
            str(len(r["evaluated"])),
            *("-" if v is None else f"{v:.4f}" for v in cells),
            ("best " if r["round"] == status.get("best_round") else "") + (r.get("decision") or "-"),
            str(len(r["refused"])),
        )
    console.print(table)
    trained = [
        f"round {r['round']}: {', '.join(sorted(r['trained_sites']))}"
        for r in status["rounds"]
        if "trained_sites" in r
    ]
    if trained:  # sites registered with `site add`: who trained, by name (whole, at any width)
        console.print("sites that trained: " + "; ".join(trained), soft_wrap=True)
    absent = [
        f"round {r['round']}: {', '.join(r['sites_not_trained'])}"
        for r in status["rounds"]
        if r.get("sites_not_trained")
    ]
    if absent:
        console.print("registered sites that did not train: " + "; ".join(absent))
    network = status.get("network_forecast")
    if network:
        console.print(f"network forecast: {network['status']} over {network['sites']} sites")


@click.command("status")
@click.argument("run_id", required=False)
@keys_option
@runs_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option(
    "--follow",
    "follow_run",
    is_flag=True,
    help="Show each round as it ends, until the run finishes (as `run`).",
)
@one_line_errors
def status_cmd(run_id: str | None, keys_dir: str, runs_dir: str, as_json: bool, follow_run: bool) -> None:
    """Rounds done and planned, nodes that answered, the aggregate losses of RUN_ID (default: the
    latest) as the sites opened them."""
    runs = Path(runs_dir).resolve()
    run_id = run_id or _latest_run(runs)
    if not (runs / run_id).is_dir():
        raise click.ClickException(f"no run {run_id} in {runs}")
    key, _ = planner_keys(keys_dir)
    if follow_run and run_id.isdigit():  # a run started with --detach, or another terminal's
        started = runs / run_id / STARTED_FILE  # a resumed run keeps its folder under a new Flower id
        flower_id = json.loads(started.read_text())["run"] if started.is_file() else int(run_id)
        finished = follow(runs, int(flower_id), runs / run_id, key.fingerprint)
        if finished.get("status") != "finished:completed":
            raise click.ClickException(
                f"run {run_id} {finished.get('status')}: {finished.get('status-details', '')}"
            )
    status = _with_site_names(run_status(runs / run_id, key.fingerprint), control.site_names(runs))
    try:
        info = control.run_info(runs, int(run_id)) if run_id.isdigit() else None
    except (control.ControlError, OSError) as exc:  # the numbers are here even when the SuperLink is not
        info = {"status": "unknown", "error": str(exc)}
    if as_json:
        print(json.dumps({**status, "flower": info}, indent=2))
    else:
        _print_status(status, info)


def opened_network_forecast(run_id: str, keys_dir: str, runs_dir: str, min_sites: int, dependence: str):
    """The network forecast the sites opened for RUN_ID, after checking the run and its key."""
    key, _ = planner_keys(keys_dir)
    run_dir = Path(runs_dir).resolve() / run_id
    if not run_dir.is_dir():
        raise click.ClickException(f"no run {run_id} in {run_dir.parent}")
    if progress(run_dir).get("fingerprint", key.fingerprint) != key.fingerprint:
        raise crypto.KeyMismatchError(f"run {run_id} was made under another key than {key.fingerprint}")
    return network_forecast(run_dir, min_sites, dependence)


min_sites_option = click.option(
    "--min-sites", type=click.IntRange(MIN_SITES), default=MIN_SITES, show_default=True
)
dependence_option = click.option(
    "--dependence",
    type=click.Choice(list(DEPENDENCE)),
    default=DEFAULT_DEPENDENCE,
    show_default=True,
    help="How forecast errors are assumed to move together: "
    + "; ".join(f"{k}: {v}" for k, v in DEPENDENCE.items()),
)


@click.command("network-forecast")
@click.argument("run_id")
@keys_option
@runs_option
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output file, .parquet or .csv."
)
@min_sites_option
@dependence_option
@one_line_errors
def network_forecast_cmd(
    run_id: str, keys_dir: str, runs_dir: str, out_path: str, min_sites: int, dependence: str
) -> None:
    """The network's forecast of RUN_ID as the sites opened it (never a sum of fewer than
    --min-sites sites)."""
    out = check_output(output_table(Path(out_path)))
    frame = opened_network_forecast(run_id, keys_dir, runs_dir, min_sites, dependence)
    write_table(frame, out)
    png = fan_chart(frame, out.with_suffix(".png"))
    total = frame[frame["group"] == "total"]
    table = Table(title=f"network demand, {int(frame['sites'].iloc[0])} sites ({dependence} dependence)")
    for col in ("date", "mean", "q10", "q50", "q90"):
        table.add_column(col, justify="right")
    for _, r in total.iterrows():
        table.add_row(str(r["date"].date()), *(f"{r[c]:,.1f}" for c in ("mean", "q10", "q50", "q90")))
    console.print(table)
    console.print(f"wrote {out} ({len(frame)} rows, {frame['group'].nunique()} groups) and {png}")
