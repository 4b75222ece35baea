"""The planner's report: one self-contained HTML file (plots embedded as PNG data URIs).

Sections, each present when its input is: forecast fans for the largest series (with actuals
where an actuals file is given), per-round federated metrics (``rounds.csv``), counts of
replenishment decisions and promotions (the run's ``decisions.csv`` / ``strategy.csv``, or every one
under the run when it has none of its own),
and the service-level curves of the inventory benchmark (``inventory.csv``).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from common.config import ConfigError, require_columns
from common.files import check_output
from common.tables import read_table

FANS = 4
NOT_KEYS = {"mean", "residual_sd", "path_corr", "ended"}
INVENTORY_COLUMNS = ["dataset", "lead", "policy", "target", "fill_rate", "on_hand_value"]
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}h2{border-bottom:1px solid #ddd;margin-top:1.6em}img{max-width:100%}"
)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _columns(fc: pd.DataFrame) -> tuple[list[str], str, list[str]]:
    """(series key columns, date column, quantile columns ordered by level)."""
    dates = [c for c in fc.columns if c.lower() == "date"]
    if not dates:
        raise ConfigError("forecasts file has no date column")
    quantiles = sorted((c for c in fc.columns if c[0] == "q" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    if not {"q10", "q50", "q90"} <= set(quantiles):
        raise ConfigError("forecasts file needs q10, q50 and q90 columns")
    keys = [c for c in fc.columns if c not in {*NOT_KEYS, dates[0], *quantiles}]
    return keys, dates[0], quantiles


def fan_section(fc: pd.DataFrame, actuals: pd.DataFrame | None, target: str | None) -> str:
    keys, date, _ = _columns(fc)
    fc = fc.assign(**{date: pd.to_datetime(fc[date])})
    top = fc.groupby(keys)["q50"].sum().nlargest(FANS).index
    fig, axes = plt.subplots(1, len(top), figsize=(4.2 * len(top), 3.2), squeeze=False)
    with_actuals = 0
    for ax, key in zip(axes[0], top, strict=False):
        key = key if isinstance(key, tuple) else (key,)
        g = fc[(fc[keys] == pd.Series(key, index=keys)).all(axis=1)].sort_values(date)
        ax.fill_between(g[date], g["q10"], g["q90"], alpha=0.25, label="q10–q90")
        if {"q25", "q75"} <= set(g.columns):
            ax.fill_between(g[date], g["q25"], g["q75"], alpha=0.35, label="q25–q75")
        ax.plot(g[date], g["q50"], label="median")
        if actuals is not None and target is not None:
            a = actuals[(actuals[keys] == pd.Series(key, index=keys)).all(axis=1)]
            a = a[pd.to_datetime(a[date]).between(g[date].min(), g[date].max())]
            ax.plot(pd.to_datetime(a[date]), a[target], "k.", label="actual")
            with_actuals += not a.empty
        ax.set_title(" / ".join(f"{k} {v}" for k, v in zip(keys, key, strict=True)), fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    axes[0][0].legend(fontsize=7)
    series = fc.groupby(keys).ngroups
    shown = f" Actuals in {with_actuals} of them." if actuals is not None else ""
    head = (
        f"<p>{series} series × {fc[date].nunique()} periods; the {len(top)} largest by forecast "
        f"volume.{shown}</p>"
    )
    return f"<h2>Forecast fans</h2>{head}{_png(fig)}"


def rounds_section(rounds: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(6, 3))
    for col in [c for c in ("mae_vs_naive", "coverage_80", "train_pinball") if c in rounds]:
        ax.plot(rounds["round"], rounds[col], marker="o", label=col)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    table = rounds.round(4).to_html(index=False, border=0)
    return f"<h2>Federated rounds</h2>{_png(fig)}{table}"


def decision_files(run_dir: Path, name: str) -> list[Path]:
    """The run's combined file (a demo writes every node's rows there, beside each node's own
    copy) or, without one, every such file under the run: no decision is counted twice."""
    combined = run_dir / name
    return [combined] if combined.is_file() else sorted(run_dir.rglob(name))


def _read_with(path: Path, columns: list[str], run_dir: Path | None = None) -> pd.DataFrame:
    """A table the report draws from, refused in one line when it lacks a column it plots; the
    columns that hold only numbers become numbers (read_table keeps CSV cells as text)."""
    frame = read_table(path)
    require_columns(frame, columns, str(path.relative_to(run_dir)) if run_dir else str(path))
    for col in frame.columns:
        numbers = pd.to_numeric(frame[col], errors="coerce")
        if numbers.notna().sum() == frame[col].notna().sum():
            frame[col] = numbers
    return frame


def decisions_section(run_dir: Path) -> str:
    parts = []
    for name, col in (("decisions.csv", "status"), ("strategy.csv", "promotion")):
        files = decision_files(run_dir, name)
        if files:
            rows = pd.concat(_read_with(p, [col], run_dir) for p in files)
            counts = rows[col].value_counts()
            parts.append(counts.rename_axis(col).reset_index(name="skus").to_html(index=False, border=0))
            if "node" in rows and rows["node"].nunique() > 1:  # which sites need attention
                parts.append(pd.crosstab(rows["node"], rows[col]).to_html(border=0))
            where = ", ".join(html.escape(str(p.relative_to(run_dir))) for p in files[:6])
            parts.append(f"<p>From {where}{' …' if len(files) > 6 else ''}.</p>")
    if not parts:
        hint = "run <code>fedstock-node replenish</code> into the run folder"
        return f"<h2>Decisions</h2><p>No decisions.csv under this run: {hint}.</p>"
    return "<h2>Decisions and promotions</h2>" + "".join(parts)


def service_section(inventory: pd.DataFrame) -> str:
    """On-hand against fill rate per curve: a system's (the year-long benchmark: its own forecasts
    and policy, lost sales) or, in older files, a policy's."""
    if "sales" in inventory:
        inventory = inventory[inventory["sales"] == "lost sales"]
    curve = "system" if "system" in inventory else "policy"
    groups = list(inventory.groupby(["dataset", "lead"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, ((name, lead), g) in zip(axes[0], groups, strict=True):
        for policy, p in g.groupby(curve):
            p = p.sort_values("target")
            ax.plot(p["fill_rate"], p["on_hand_value"], marker="o", label=policy)
        ax.set_title(f"{name}, lead time {lead}", fontsize=9)
        ax.set_xlabel("achieved fill rate")
        ax.set_ylabel("average on-hand")
    axes[0][0].legend(fontsize=7)
    return f"<h2>Service level vs stock</h2>{_png(fig)}"


def build_report(
    run_dir: Path,
    out: Path | None = None,
    actuals_path: Path | None = None,
    target: str | None = None,
    inventory_path: Path | None = None,
) -> Path:
    run_dir = Path(run_dir)
    out = check_output(out or run_dir / "report.html")  # before anything is read
    fc_path = run_dir / "forecasts.parquet"
    if not fc_path.is_file():
        raise ConfigError(f"{fc_path} not found: is {run_dir} a simulate run folder?")
    fc = read_table(fc_path)
    actuals = _read_with(Path(actuals_path), []) if actuals_path else None
    if actuals is not None and (target is None or target not in actuals.columns):
        raise ConfigError(f"actuals file has no target column {target!r}: pass --target")
    if actuals is not None:
        keys, date, _ = _columns(fc)
        require_columns(actuals, [*keys, date], "actuals file", " (the forecasts' keys and date)")
    sections = [fan_section(fc, actuals, target)]
    if (run_dir / "rounds.csv").is_file():
        sections.append(rounds_section(_read_with(run_dir / "rounds.csv", ["round"], run_dir)))
    sections.append(decisions_section(run_dir))
    inventory_path = inventory_path or (run_dir / "inventory.csv")
    if inventory_path.is_file():
        inventory = _read_with(Path(inventory_path), INVENTORY_COLUMNS)
        sections.append(service_section(inventory))
    title = f"fedstock report: {html.escape(run_dir.name)}"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>{''.join(sections)}</body></html>"
    )
    out.write_text(page, encoding="utf-8")
    return out
