"""The demo federation: synthetic warehouses -> keys -> encrypted rounds -> forecasts -> decisions.

Layout of ``OUT``::

    keys/                 public.ctx, keys.json: all the coordinator and the planner hold
    nodes/warehouse-NN/   one folder per node: node.toml, raw/, keys/ (secret.ctx, 0600), private/,
                          out/; warehouse-00 is the key steward, which made the key pair
    checkpoints/          the coordinator's encrypted state and metrics, every round; network.json
                          (the network forecast the sites opened) and dc/ (the DC's decisions)
    report.html           the planner's report; each site's is nodes/warehouse-NN/out/report.html
    deployment/           SuperLink / SuperNode / flwr run logs (certs/ with --tls)
    deployment-resumed-*/ the same for each `fedstock-planner resume`
    demo.json             the settings, so that `resume` can continue the run
    forecasts.parquet, decisions.csv, strategy.csv, rounds.csv   (all nodes, with a node column)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from common import crypto
from common.config import load_node_config
from common.files import check_output
from common.network import MIN_SITES, NetworkError
from common.processes import write_run_config
from common.synthetic import SyntheticSpec, write_warehouse
from coordinator.checkpoints import NETWORK_META
from coordinator.planner.dc import dc_forecasts
from coordinator.planner.provision import site_keys
from coordinator.planner.report import build_planner_report
from coordinator.planner.runs import network_forecast, progress, round_metrics
from warehouse_node import journal
from warehouse_node.node import Node
from warehouse_node.replenish import run_replenish
from warehouse_node.site_report import build_site_report

Report = Callable[[str], None]
SETTINGS_FILE = "demo.json"


@dataclass(frozen=True)
class DemoSettings:
    nodes: int = 3
    rounds: int = 3
    local_epochs: int | None = None  # None: the app's default (pyproject.toml)
    seed: int = 7
    items: int = 16
    days: int = 730
    engine: str = "deployment"  # or "inprocess"
    tls: bool = False  # deployment only: TLS (CA made for the run) and SuperNode authentication


def run_config(out: Path, s: DemoSettings, resume: bool = False) -> dict:
    """The demo's run config over the app's defaults: what the demo chooses differently."""
    rc = {
        "resume": resume,
        "num-rounds": s.rounds,  # the cap: the sites stop earlier when their validation stops improving
        "stop-patience": 2,  # a short demo: two rounds without a better summed score end it
        "min-nodes": s.nodes,
        "network-forecast": s.nodes >= MIN_SITES,  # the DC's forecast: a sum over 3 sites at least
        "seed": s.seed,  # also the synthetic data's
        "public-context": str((out / "keys" / crypto.PUBLIC_CONTEXT_FILE).resolve()),
        "checkpoint-dir": str((out / "checkpoints").resolve()),
    }
    return rc if s.local_epochs is None else {**rc, "local-epochs": s.local_epochs}


def federate(out: Path, node_dirs: list[Path], s: DemoSettings, report: Report, resume: bool = False) -> None:
    rc = run_config(out, s, resume)
    if s.engine == "inprocess":
        from coordinator.planner.inprocess import run_inprocess
        from coordinator.server_app import app as server_app
        from warehouse_node.client_app import app as client_app

        run_inprocess(server_app, client_app, node_dirs, rc, progress=report)
        return
    from coordinator.planner.deployment import LocalDeployment

    rc_file = out / "run_config.toml"
    write_run_config(rc_file, rc)
    seen = {"n": 0}

    def poll() -> None:
        history = progress(out / "checkpoints").get("history", [])
        for h in history[seen["n"] :]:
            report(
                f"round {h['round']} {h['phase']}: {h['replies']} nodes aggregated, "
                f"{len(h['refused'])} refused"
            )
        seen["n"] = len(history)

    # a resumed run keeps the logs of the attempt that died
    workdir = out / (f"deployment-resumed-{time.strftime('%Y%m%d-%H%M%S')}" if resume else "deployment")
    with LocalDeployment(workdir, node_dirs, tls=s.tls, auth=s.tls) as dep:
        security = "TLS, SuperNode keys registered" if s.tls else "insecure transport"
        report(
            f"SuperLink on 127.0.0.1:{dep.superlink_port} ({security}), {len(node_dirs)} SuperNodes started"
        )
        dep.run(rc_file, on_poll=poll)
        poll()


def check_rounds(out: Path, rounds: int) -> None:
    """flwr run exits 0 even when the run failed: trust only what the ServerApp wrote."""
    done = progress(out / "checkpoints")
    last = done.get("last_round", 0)
    if last < rounds and not done.get("outcome"):
        logs = out / "deployment" / "logs"
        raise RuntimeError(f"federation finished {last} of {rounds} rounds; see {logs}")


def run_demo(out: Path, s: DemoSettings, report: Report) -> dict[str, pd.DataFrame]:
    out = out.resolve()
    if s.tls and s.engine != "deployment":
        raise ValueError("--tls needs the deployment engine (real SuperLink and SuperNodes)")
    check_output(out, folder=True)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose another --out or remove it")
    node_dirs = [out / "nodes" / f"warehouse-{i:02d}" for i in range(s.nodes)]
    spec = SyntheticSpec(items=s.items, days=s.days)
    for i, node_dir in enumerate(node_dirs):
        write_warehouse(node_dir, i, spec, seed=s.seed)
    fingerprint = site_keys(node_dirs, out / "keys")
    steward = node_dirs[0].name
    report(f"keys made at {steward} (the key steward), fingerprint {fingerprint}; keys/: the public half")
    for node_dir in node_dirs:
        counts = Node(load_node_config(node_dir)).prepare()
        dropped = counts.pop("dropped_columns")
        report(
            f"{node_dir.name}: prepared {counts.pop('series')} series, "
            f"{counts.pop('periods')} periods; {dropped} raw columns dropped; quarantined rows {counts}"
        )
    (out / SETTINGS_FILE).write_text(json.dumps(asdict(s), indent=2) + "\n")
    return finish(out, node_dirs, s, report)


def resume_demo(out: Path, report: Report) -> dict[str, pd.DataFrame]:
    """Continue a demo whose coordinator died: from the last intact encrypted checkpoint."""
    out = out.resolve()
    if not (out / SETTINGS_FILE).is_file():
        raise FileNotFoundError(f"{out} holds no {SETTINGS_FILE}: not a demo run folder")
    s = DemoSettings(**json.loads((out / SETTINGS_FILE).read_text()))
    done = progress(out / "checkpoints").get("last_round", 0)
    report(f"resuming {out.name}: {done} of {s.rounds} rounds done")
    node_dirs = sorted(p for p in (out / "nodes").iterdir() if (p / "node.toml").is_file())
    return finish(out, node_dirs, s, report, resume=True)


def finish(
    out: Path, node_dirs: list[Path], s: DemoSettings, report: Report, resume: bool = False
) -> dict[str, pd.DataFrame]:
    """Federate, then let every node forecast and decide; write the run's combined outputs."""
    federate(out, node_dirs, s, report, resume)
    check_rounds(out, s.rounds)
    forecasts, decisions, strategies = [], [], []
    for node_dir in node_dirs:
        cfg = load_node_config(node_dir)
        fc = Node(cfg).forecast()
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        fc.to_parquet(cfg.out_dir / "forecasts.parquet", index=False)
        journal.record_forecast(cfg, fc)
        result = run_replenish(cfg.out_dir / "forecasts.parquet", node_dir / "stock.csv", cfg.out_dir)
        if len(result.rejected):
            raise RuntimeError(f"{cfg.name}: {len(result.rejected)} stock rows rejected")
        forecasts.append(fc)
        decisions.append(result.decisions.assign(node=cfg.name))
        strategies.append(result.strategy.assign(node=cfg.name))
        report(f"{cfg.name}: forecast {fc['sku'].nunique()} skus, decided {len(result.decisions)}")
    outputs = {
        "forecasts": pd.concat(forecasts, ignore_index=True),
        "decisions": _node_first(pd.concat(decisions, ignore_index=True)),
        "strategy": _node_first(pd.concat(strategies, ignore_index=True)),
        "rounds": round_metrics(out / "checkpoints"),
    }
    outputs["forecasts"].to_parquet(out / "forecasts.parquet", index=False)
    outputs["decisions"].to_csv(out / "decisions.csv", index=False)
    outputs["strategy"].to_csv(out / "strategy.csv", index=False)
    outputs["rounds"].to_csv(out / "rounds.csv", index=False)
    outputs["reports"] = write_reports(out, node_dirs, report)
    return outputs


def distribution_center(out: Path, report: Report) -> None:
    """The DC's decisions from the network forecast the sites opened, for a DC stock file made
    here (one 'total' row: two periods of network demand on hand, a 3-period lead time)."""
    try:
        network = network_forecast(out / "checkpoints")
    except NetworkError as exc:  # the sites refused to open it: the reports say so
        report(f"distribution center: no network forecast ({exc})")
        return
    total = network[network["group"] == "total"]
    dc = out / "checkpoints" / "dc"
    dc.mkdir(parents=True, exist_ok=True)
    on_hand = round(float(total["mean"].iloc[:2].sum()))
    stock = pd.DataFrame([{"sku": "total", "on_hand": on_hand, "on_order": 0, "lead_time": 3}])
    stock.to_csv(dc / "stock.csv", index=False)
    result = run_replenish(dc_forecasts(network), dc / "stock.csv", dc, write_strategy=False)
    row = result.decisions.iloc[0]
    report(
        f"distribution center: {row['status']}, order {row['order_qty']:g} "
        f"(network forecast of {int(total['sites'].iloc[0])} sites)"
    )


def write_reports(out: Path, node_dirs: list[Path], report: Report) -> list[Path]:
    """The planner's report of the run, and each site's morning report in its own folder."""
    if (out / "checkpoints" / NETWORK_META).is_file():
        distribution_center(out, report)
    fingerprint = crypto.load_public(out / "keys").fingerprint
    paths = [build_planner_report(out / "checkpoints", out / "report.html", fingerprint)]
    for node_dir in node_dirs:
        cfg = load_node_config(node_dir)
        paths.append(build_site_report(cfg, stock=node_dir / "stock.csv"))
    report(f"reports: {paths[0]} (the planner's), {len(node_dirs)} sites' in nodes/*/out/report.html")
    return paths


def _node_first(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["node", *[c for c in frame.columns if c != "node"]]]
