"""The site operator's morning report: one HTML file built from the node's own folder.

What to act on today first (replenish now and warnings, by stockout risk, with any override beside
the model's suggestion), then availability and promotion advice, then per sku the last year of
demand, the forecast fan and the stock projected against the reorder point, and the data's health.
It reads NODE/out (decisions, strategy, forecasts) and NODE/private (demand history, the series
map, quarantine counts, hold-out scores); it is written into NODE/out and sent nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import html_report as ui
from common.config import ConfigError, NodeConfig, require_columns
from common.files import check_output
from common.tables import read_table
from warehouse_node import journal
from warehouse_node.join import status_lines
from warehouse_node.pipeline import DEMAND_FILE, MAP_FILE, QUARANTINE_FILE
from warehouse_node.replenish import DECISION_COLUMNS
from warehouse_node.site_charts import sku_chart

URGENT = ("REPLENISH_NOW", "WARNING")
TOP_SKUS = 8
HISTORY_PERIODS = {"D": 365, "W": 52, "M": 12}  # a year of history on each sku's chart


@dataclass
class SiteFiles:
    """What the report reads; absent optional parts are None and the report says so."""

    decisions: pd.DataFrame | None
    strategy: pd.DataFrame | None
    rejected: pd.DataFrame | None
    forecasts: pd.DataFrame | None
    history: pd.DataFrame  # sku, date, demand (the series map applied: the operator's own names)
    unit_cost: pd.Series | None  # by sku, from the stock file when it has unit_cost

    @classmethod
    def read(cls, cfg: NodeConfig, decisions_dir: Path, forecasts: Path, stock: Path | None) -> SiteFiles:
        def optional(path: Path, columns: list[str]) -> pd.DataFrame | None:
            if not path.is_file():
                return None
            frame = read_table(path)
            require_columns(frame, columns, str(path))
            return frame

        decisions_path = decisions_dir / "decisions.csv"
        decisions = optional(decisions_path, ["sku", "status", "order_qty", "reason"])
        if decisions is not None:
            decisions = _numbers(decisions, DECISION_NUMBERS, decisions_path)
        fc = optional(forecasts, ["sku", "date", "mean", "q10", "q50", "q90"])
        if fc is not None:  # a CSV forecast's cells are text until made numbers
            quantiles = [c for c in fc.columns if c[0] == "q" and c[1:].isdigit()]
            fc = _numbers(fc, ["mean", *quantiles], forecasts)
            fc = fc.assign(date=pd.to_datetime(fc["date"], errors="coerce"))
            if "source_reason" in fc:
                fc["source_reason"] = fc["source_reason"].fillna("")
            if fc["date"].isna().any():
                raise ConfigError(
                    f"{forecasts}: row {int(fc['date'].isna().argmax()) + 2} has no readable date"
                )
        cost = None
        if stock is not None:
            table = read_table(stock)
            require_columns(table, ["sku"], str(stock))
            if "unit_cost" in table:
                cost = pd.to_numeric(table["unit_cost"], errors="coerce").set_axis(table["sku"].astype(str))
        return cls(
            decisions,
            optional(decisions_dir / "strategy.csv", ["sku", "availability", "promotion", "reason"]),
            optional(decisions_dir / "rejected.csv", ["reason"]),
            fc,
            _history(cfg),
            cost,
        )


DECISION_NUMBERS = [c for c in DECISION_COLUMNS if c not in ("sku", "status", "reason")] + ["model_order_qty"]


def _numbers(frame: pd.DataFrame, columns: list[str], path: Path) -> pd.DataFrame:
    """``columns`` (those present) as numbers and ``sku`` as text ("001" stays "001"); a cell that
    is not a number is refused, naming the file, the column and the row."""
    frame = frame.assign(sku=frame["sku"].astype(str).str.strip())
    for col in (c for c in columns if c in frame.columns):
        numbers = pd.to_numeric(frame[col], errors="coerce")
        bad = numbers.isna() & frame[col].notna() & (frame[col].astype(str).str.strip() != "")
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise ConfigError(f"{path}: {col} is not a number in row {row + 2} ({frame[col].iloc[row]!r})")
        frame[col] = numbers
    return frame


def _history(cfg: NodeConfig) -> pd.DataFrame:
    demand, names = cfg.private_dir / DEMAND_FILE, cfg.private_dir / MAP_FILE
    if not demand.is_file() or not names.is_file():
        return pd.DataFrame(columns=["sku", "date", "demand"])
    panel = pd.read_parquet(demand, columns=["series", "date", "demand"])
    sku = pd.read_parquet(names).set_index("series")["sku"].astype(str)
    return panel.assign(sku=panel["series"].map(sku), date=pd.to_datetime(panel["date"]))[
        ["sku", "date", "demand"]
    ]


def act_today(files: SiteFiles) -> str:
    d = files.decisions
    if d is None:
        return ui.note("No decisions.csv yet: run fedstock-node replenish with this node's stock file.")
    listed = d["status"].isin(URGENT)
    if "model_status" in d:  # pinned by an override or asked by the model: either is listed
        listed |= d["model_status"].isin(URGENT)
    urgent = d[listed]
    order = ["stockout_risk"] if "stockout_risk" in urgent else []
    urgent = urgent.assign(_rank=urgent["status"].map({s: i for i, s in enumerate(URGENT)}).fillna(2))
    urgent = urgent.sort_values([*order, "_rank"], ascending=[False] * len(order) + [True])
    shown = [
        c
        for c in (
            "sku",
            "status",
            "stockout_risk",
            "order_qty",
            "on_hand",
            "on_order",
            "reorder_point",
            "order_up_to",
            "model_status",
            "model_order_qty",
            "override_by",
            "override_why",
            "reason",
        )
        if c in urgent
    ]
    counts = d["status"].value_counts()
    lines = int((urgent["order_qty"] > 0).sum())
    head = ui.kpis(
        [
            (str(counts.get("REPLENISH_NOW", 0)), "replenish now"),
            (str(counts.get("WARNING", 0)), "warnings"),
            (str(lines), "order lines"),
            (f"{int(urgent['order_qty'].sum()):,}", "units to order"),
            (str(len(d)), "skus decided"),
        ]
    )
    if urgent.empty:
        return head + ui.note("Nothing to order today: every sku's position covers its next review.")
    table = urgent[shown]
    if "stockout_risk" in table:
        table = table.assign(stockout_risk=(table["stockout_risk"] * 100).round(1)).rename(
            columns={"stockout_risk": "stockout risk %"}
        )
    why = (
        "Sorted by stockout risk: the chance of running out before an order placed at the next review "
        "arrives, if nothing were ordered now. Overrides show the model's suggestion beside the "
        "operator's (model_status, model_order_qty) and who set it, and why."
    )
    return head + ui.note(why) + ui.table(table, badge_columns=("status", "model_status"))


def availability(files: SiteFiles) -> str:
    s = files.strategy
    if s is None:
        return ui.note("No strategy.csv yet: fedstock-node replenish writes it beside decisions.csv.")
    first = {"OUT_OF_STOCK": 0, "LOW_STOCK": 1, "SUPPRESS": 2, "PROMOTE": 3}
    rank = np.minimum(s["availability"].map(first).fillna(9), s["promotion"].map(first).fillna(9))
    s = s.assign(_rank=rank).sort_values(["_rank", "sku"]).drop(columns="_rank")
    counts = [(str(int((s[c] == v).sum())), v.lower().replace("_", " ")) for c, v in _STRATEGY_COUNTS]
    optional = ("sku", "availability", "restock_date", "promotion", "model_promotion", "override_by")
    keep = [c for c in optional if c in s] + ["reason"]
    return ui.kpis(counts) + ui.table(s[keep], badge_columns=("availability", "promotion", "model_promotion"))


_STRATEGY_COUNTS = (
    ("availability", "OUT_OF_STOCK"),
    ("availability", "LOW_STOCK"),
    ("promotion", "PROMOTE"),
    ("promotion", "SUPPRESS"),
)


def chosen_skus(files: SiteFiles, asked: list[str], top: int) -> tuple[list[str], str]:
    """The top ``top`` skus by forecast value (units × unit_cost, or units without a cost), then
    any asked for; unknown asked skus are refused."""
    fc = files.forecasts
    if fc is None:
        return [], "no forecasts"
    known = set(fc["sku"])
    if missing := [s for s in asked if s not in known]:
        raise ConfigError(f"--sku {missing[0]!r} has no forecast at this node")
    units = fc.groupby("sku")["mean"].sum()
    basis = "forecast units"
    if files.unit_cost is not None:
        cost = files.unit_cost[~files.unit_cost.index.duplicated()].reindex(units.index)
        if cost.notna().any():
            units, basis = units * cost.fillna(0.0), "forecast value (units × unit_cost)"
    ranked = list(units.sort_values(ascending=False).index[:top])
    return ranked + [s for s in asked if s not in ranked], basis


def sku_section(files: SiteFiles, skus: list[str], basis: str, freq: str) -> str:
    if not skus:
        return ui.note("No forecasts yet: run fedstock-node forecast.")
    periods = HISTORY_PERIODS.get(freq[:1].upper(), 52)
    d = files.decisions.set_index("sku") if files.decisions is not None else None
    charts = []
    for sku in skus:
        decision = d.loc[sku] if d is not None and sku in d.index else None
        if isinstance(decision, pd.DataFrame):
            decision = decision.iloc[0]
        fc = files.forecasts[files.forecasts["sku"] == sku].sort_values("date")
        history = files.history[files.history["sku"] == sku].sort_values("date").tail(periods + len(fc))
        source = str(fc["source"].iloc[0]) if "source" in fc and len(fc) else "model"
        alt = (
            f"sku {sku}: forecast from the {'FALLBACK baseline' if source == 'fallback' else 'global model'}"
        )
        charts.append(ui.figure(sku_chart(sku, history, fc, decision), alt))
    note = (
        f"The top {len(skus)} skus by {basis}, and those asked for with --sku. Left: the last year of "
        "demand, the forecast's median with its 50% and 80% bands, and the demand that came in the "
        "forecast's periods where known. Right: on hand, with what is on order, run down by the "
        "median demand and by the 90% quantile each period, against the reorder point."
    )
    return ui.note(note) + "<div>" + "".join(charts) + "</div>"


def health(cfg: NodeConfig, files: SiteFiles) -> str:
    parts = []
    q = cfg.private_dir / QUARANTINE_FILE
    if q.is_file():
        reasons = pd.read_csv(q, usecols=["reason"])["reason"].value_counts()
        parts.append("<h3>Rows quarantined, by reason</h3>")
        parts.append(ui.table(reasons.rename_axis("reason").reset_index(name="rows")))
    names = cfg.private_dir / MAP_FILE
    if names.is_file():
        ended = pd.read_parquet(names)
        n = int(ended["ended"].sum()) if "ended" in ended else 0
        parts.append(ui.note(f"{len(ended)} series; {n} ended (no sale for long: no forecast, no order)."))
    if files.forecasts is not None and "source" in files.forecasts:
        src = files.forecasts.groupby("sku")[["source", "source_reason"]].first()
        made = src.value_counts().rename("skus").reset_index()
        parts.append("<h3>Where today's forecast came from</h3>")
        parts.append(ui.table(made.assign(source=made["source"].str.upper()), badge_columns=("source",)))
    if files.rejected is not None and len(files.rejected):
        rej = files.rejected["reason"].value_counts().rename_axis("reason").reset_index(name="stock rows")
        parts += ["<h3>Stock rows rejected by replenish</h3>", ui.table(rej)]
    state = journal.read_status(cfg)
    try:
        scores = journal.read_holdout(cfg)["rounds"]
    except ValueError as exc:
        scores = [{"error": str(exc)}]
    rows = dict(status_lines(state, scores[-1] if scores else None))
    facts = pd.DataFrame({"what": list(rows), "value": list(rows.values())})
    parts += ["<h3>The global model here</h3>", ui.table(facts, sortable=False)]
    good = [s for s in scores if "error" not in s and s.get("points")]
    if good:
        frame = pd.DataFrame(good)[["run", "round", "model", "mae", "naive_mae", "coverage_80", "points"]]
        frame = frame.assign(mae_vs_naive=frame["mae"] / frame["naive_mae"].replace(0, np.nan))
        parts += ["<h3>Hold-out score here, each global model against seasonal naive</h3>", ui.table(frame)]
    return "".join(parts)


def build_site_report(
    cfg: NodeConfig,
    out: Path | None = None,
    decisions_dir: Path | None = None,
    forecasts: Path | None = None,
    stock: Path | None = None,
    skus: tuple[str, ...] = (),
    top: int = TOP_SKUS,
) -> Path:
    out = check_output(Path(out) if out else cfg.out_dir / "report.html")  # before anything is read
    files = SiteFiles.read(
        cfg, Path(decisions_dir or cfg.out_dir), Path(forecasts or cfg.out_dir / "forecasts.parquet"), stock
    )
    chosen, basis = chosen_skus(files, list(skus), top)
    day = files.forecasts["date"].min().date() if files.forecasts is not None else "no forecast yet"
    sections = [
        ("act", "Act today", act_today(files)),
        ("advice", "Availability and promotions", availability(files)),
        ("skus", "Skus", sku_section(files, chosen, basis, cfg.data.frequency)),
        ("health", "Data health", health(cfg, files)),
    ]
    subtitle = f"{cfg.name}: forecast from {day}; stays on this node (it names skus and stock)"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(ui.page(f"{cfg.name}: morning report", subtitle, sections), encoding="utf-8")
    return out
