"""The planner's run report: one HTML file from what the planner holds of a run, nothing more.

It reads the run's folder (RUNS/RUN_ID, or a demo's or simulation's checkpoints/): progress.json
(rounds, who answered, refused updates, the stopping decision, the privacy budget), the per-round
aggregates the sites opened, the network forecast they opened (network.json), and the
distribution center's decisions when ``dc-replenish`` made them. None of these holds a sku, a
pseudonym or one site's figure: every number is a sum over at least the run's minimum of sites.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import html_report as ui
from common.config import require_columns
from common.files import check_output
from common.network import DEFAULT_DEPENDENCE, MIN_SITES, NetworkError
from common.settings import MIN_PUBLISHED_SITES
from common.tables import read_table
from coordinator.checkpoints import NETWORK_META
from coordinator.planner.report_charts import network_fans, round_curves
from coordinator.planner.runs import progress, round_metrics, run_status

DC_COLUMNS = ["sku", "status", "order_qty", "reorder_point", "order_up_to", "reason"]


def summary(status: dict, done: dict, network: pd.DataFrame | None) -> str:
    privacy = done.get("privacy")
    trained = [len(r["trained"]) for r in status["rounds"]]
    items = [
        (f"{status['rounds_done']} / {status['rounds_planned'] or '?'}", "rounds done / at most"),
        (str(status["best_round"] or "-"), "best round (the sites' model)"),
        (f"{max(trained, default=0)}", "sites in a round, at most"),
        ("yes" if network is not None else "no", "network forecast opened"),
        (f"ε {privacy['epsilon']:.2f}" if privacy else "off", "differential privacy"),
    ]
    stop = status.get("stop_reason") or "the run has not stopped yet (or stopped without a decision)"
    return ui.kpis(items) + ui.note(f"Stopping: {stop}.")


def rounds_section(status: dict, run_dir: Path) -> str:
    metrics = round_metrics(run_dir)
    rows = []
    for r in status["rounds"]:
        best = r["round"] == status.get("best_round")
        mae, naive = r["validation_mae"], r["naive_mae"]
        rows.append(
            {
                "round": r["round"],
                "trained": len(r["trained"]),
                "validated": len(r["evaluated"]),
                "opened by": r["opened_by"] if r["opened_by"] is not None else np.nan,
                "refused": len(r["refused"]),
                "train loss": _num(r["train_loss"]),
                "validation loss": _num(r["validation_loss"]),
                "validation MAE": _num(mae),
                "seasonal naive MAE": _num(naive),
                "MAE / naive": mae / naive if mae is not None and naive else np.nan,
                "80% coverage": _num(_metric(metrics, r["round"], "coverage_80")),
                "decision": ("best, " if best else "") + (r["decision"] or "-"),
            }
        )
    if not rows:
        return ui.note("No round has finished yet: the coordinator writes progress.json after each.")
    frame = pd.DataFrame(rows)
    chart = ui.figure(round_curves(frame, status.get("best_round")), "training and validation by round")
    why = (
        "Losses are pinball losses summed over the sites and opened by them; the validation MAE is "
        "each site's hold-out window, summed, beside seasonal naive on the same points."
    )
    return chart + ui.note(why) + ui.table(frame, digits=4)


def _num(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _metric(metrics: pd.DataFrame, round_: int, column: str) -> float | None:
    if metrics.empty or column not in metrics:
        return None
    hit = metrics.loc[metrics["round"] == round_, column]
    return float(hit.iloc[0]) if len(hit) else None


def participation(status: dict, names: dict[int, str]) -> str:
    """Who answered each round (by site name where ``site add`` registered it), and refusals."""
    rounds = status["rounds"]
    if not rounds:
        return ui.note("No round yet.")
    nodes = sorted({int(n) for r in rounds for n in (*r["trained"], *r["evaluated"])} | set(names))
    rows = []
    for node in nodes:
        row = {"site": names.get(node, f"node {node}")}
        for r in rounds:
            trained = node in {int(n) for n in r["trained"]}
            validated = node in {int(n) for n in r["evaluated"]}
            row[f"round {r['round']}"] = (
                "trained, validated"
                if trained and validated
                else ("trained" if trained else "validated" if validated else "-")
            )
        rows.append(row)
    parts = [ui.table(pd.DataFrame(rows), sortable=False)]
    refused = [{"round": r["round"], "refused update": line} for r in rounds for line in r["refused"]]
    if refused:
        parts += ["<h3>Refused updates</h3>", ui.table(pd.DataFrame(refused))]
    else:
        parts.append(ui.note("No update was refused."))
    return "".join(parts)


def privacy_section(done: dict, min_sites: int) -> str:
    lines = [
        "The planner holds no secret key: every figure here is a sum over sites that the sites opened "
        f"together: each round's losses and hold-out errors over at least {MIN_PUBLISHED_SITES} sites "
        "(the run config's publish-min-sites may raise it), the network forecast over at least "
        f"{min_sites}. No sku, pseudonym or one site's number reaches this folder."
    ]
    p = done.get("privacy")
    if p:
        lines.append(
            f"Differential privacy: (ε = {p['epsilon']:.2f}, δ = {p['delta']:g}) over {p['rounds']} rounds "
            f"of {p['nodes']} sites, noise multiplier {p['noise_multiplier']:g}, clip {p['clip']:g} "
            f"({p['accountant']})."
        )
    else:
        lines.append("Differential privacy is off in this run (run config dp-clip = 0).")
    return "".join(ui.note(line) for line in lines)


def network_section(network: pd.DataFrame | None, reason: str) -> str:
    if network is None:
        return ui.note(f"No network forecast: {reason}.")
    total = network[network["group"] == "total"]
    facts = total.iloc[0]
    head = ui.kpis(
        [
            (f"{int(facts['sites'])}", "sites summed"),
            (str(facts["dependence"]), "dependence"),
            (f"{facts['site_correlation']:.2f}", "correlation between sites"),
            (f"{facts['variance_scale']:.2f}", "variance scale"),
            (f"{facts['path_corr']:.2f}", "correlation along the horizon"),
        ]
    )
    shown = total[["date", "mean", "q05", "q10", "q25", "q50", "q75", "q90", "q95", "sd"]]
    shown = shown.assign(date=pd.to_datetime(shown["date"]).dt.strftime("%Y-%m-%d"))
    by_group = network.groupby("group", sort=False)["mean"].sum().rename("mean over the horizon")
    return (
        head
        + ui.figure(network_fans(network), "network forecast by group")
        + "<h3>Network total</h3>"
        + ui.table(shown, digits=1)
        + (
            "<h3>By group</h3>" + ui.table(by_group.reset_index(), digits=1)
            if network["group"].nunique() > 1
            else ""
        )
    )


def dc_section(dc_dir: Path | None) -> str:
    path = dc_dir / "decisions.csv" if dc_dir else None
    if path is None or not path.is_file():
        hint = "fedstock-planner dc-replenish RUN_ID --stock FILE --out RUN_DIR/dc"
        return ui.note(f"No distribution center decisions for this run ({hint} makes them).")
    frame = read_table(path)
    require_columns(frame, DC_COLUMNS, str(path))
    keep = [
        c for c in (*DC_COLUMNS[:-1], "on_hand", "on_order", "safety_stock", "stockout_risk") if c in frame
    ]
    for col in keep[2:]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return ui.table(frame[[*keep, "reason"]].rename(columns={"sku": "group"}), badge_columns=("status",))


def build_planner_report(
    run_dir: Path,
    out: Path | None = None,
    fingerprint: str | None = None,
    names: dict[int, str] | None = None,
    dc_dir: Path | None = None,
    min_sites: int = MIN_SITES,
    dependence: str = DEFAULT_DEPENDENCE,
) -> Path:
    """Write the report of the run in ``run_dir`` (its progress.json folder)."""
    from coordinator.planner.runs import network_forecast

    run_dir = Path(run_dir)
    beside = run_dir.parent if run_dir.name == "checkpoints" else run_dir  # a demo's folder: its top
    out = check_output(Path(out) if out else beside / "report.html")  # before anything is read
    status = run_status(run_dir, fingerprint)
    done = progress(run_dir)
    network, reason = None, "the run did not make one (network-forecast = true in its run config does)"
    if (run_dir / NETWORK_META).is_file():
        try:
            network = network_forecast(run_dir, min_sites, dependence)
        except NetworkError as exc:
            reason = str(exc)
    dc_dir = dc_dir if dc_dir is not None else run_dir / "dc"
    sections = [
        ("summary", "Summary", summary(status, done, network)),
        ("rounds", "Rounds", rounds_section(status, run_dir)),
        ("sites", "Who answered", participation(status, names or {})),
        ("network", "Network forecast", network_section(network, reason)),
        ("dc", "Distribution center", dc_section(dc_dir)),
        ("privacy", "Privacy", privacy_section(done, min_sites)),
    ]
    when = time.strftime("%Y-%m-%d %H:%M")
    label = run_dir.parent.name if run_dir.name == "checkpoints" else run_dir.name  # a demo's folder
    title = f"fedstock run {label}"
    subtitle = f"the planner's report, written {when}: aggregates over sites only"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(ui.page(title, subtitle, sections), encoding="utf-8")
    return out
