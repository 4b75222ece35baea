"""One sku's chart in the site operator's report: demand history and forecast fan on the left, the
stock position run down by the forecast against the reorder point on the right."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

BLUE, GREY, RED, GREEN = "#1f77b4", "#7b8794", "#c0392b", "#2e7d32"


def sku_chart(sku: str, history: pd.DataFrame, fc: pd.DataFrame, decision: pd.Series | None):
    """history: date, demand (the last year and the forecast's periods where known); fc: date,
    q10, q50, q90 (q25/q75 when there), source; decision: a decisions.csv row or None."""
    fig, (year, recent, right) = plt.subplots(
        1, 3, figsize=(12, 3.0), gridspec_kw={"width_ratios": [1.6, 1.2, 1]}
    )
    _demand(year, history, fc, legend=False)
    _demand(recent, history[history["date"] >= _recent_start(history, fc)], fc, legend=True)
    source = str(fc["source"].iloc[0]) if "source" in fc and len(fc) else "model"
    status = str(decision["status"]) if decision is not None else "no decision"
    tag = "FALLBACK baseline" if source == "fallback" else "global model"
    year.set_title(f"{sku}: {status}; forecast from the {tag}", fontsize=10, loc="left")
    recent.set_title("the last periods and the forecast", fontsize=9, loc="left")
    _position(right, fc, decision)
    fig.tight_layout()
    return fig


def _recent_start(history: pd.DataFrame, fc: pd.DataFrame) -> pd.Timestamp:
    """Three forecast horizons of history before the forecast: enough to judge its level."""
    if not len(fc):
        return history["date"].min() if len(history) else pd.Timestamp.min
    dates = history.loc[history["date"] < fc["date"].min(), "date"].drop_duplicates()
    return dates.iloc[-3 * len(fc)] if len(dates) >= 3 * len(fc) else fc["date"].min() - pd.Timedelta(days=1)


def _demand(ax, history: pd.DataFrame, fc: pd.DataFrame, legend: bool) -> None:
    start = fc["date"].min() if len(fc) else None
    past = history[history["date"] < start] if start is not None else history
    ax.plot(past["date"], past["demand"], color=GREY, lw=1, label="demand")
    if len(fc):
        ax.axvspan(fc["date"].min(), fc["date"].max(), color=BLUE, alpha=0.06, lw=0)
        ax.fill_between(fc["date"], fc["q10"], fc["q90"], color=BLUE, alpha=0.18, lw=0, label="80% band")
        if {"q25", "q75"} <= set(fc.columns):
            ax.fill_between(fc["date"], fc["q25"], fc["q75"], color=BLUE, alpha=0.35, lw=0, label="50% band")
        ax.plot(fc["date"], fc["q50"], color=BLUE, lw=1.6, label="median forecast")
        came = history[history["date"] >= start]
        if len(came):
            ax.plot(came["date"], came["demand"], "k.", ms=5, label="demand that came")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("demand per period", fontsize=8)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=5))
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.tick_params(labelsize=7)
    if legend:
        ax.legend(fontsize=6.5, loc="upper left", ncol=2, frameon=False)


def _position(ax, fc: pd.DataFrame, decision: pd.Series | None) -> None:
    if decision is None or "on_hand" not in decision or not len(fc):
        said = (
            "no decision for this sku"
            if decision is None
            else "decisions.csv predates on_hand:\nrerun replenish"
        )
        ax.text(0.5, 0.5, said, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    position = float(decision["on_hand"]) + float(decision.get("on_order", 0.0))
    steps = np.arange(len(fc) + 1)
    median = position - np.concatenate([[0.0], np.cumsum(fc["q50"].to_numpy(float))])
    high = position - np.concatenate([[0.0], np.cumsum(fc["q90"].to_numpy(float))])
    ax.plot(steps, median, color=BLUE, lw=1.6, label="position − median demand")
    ax.plot(steps, high, color=BLUE, lw=1, ls="--", label="− 90% quantile each period")
    qty = float(decision.get("order_qty", 0) or 0)
    if qty > 0:
        ax.plot(steps, median + qty, color=GREEN, lw=1.2, label=f"with today's order of {qty:,.0f}")
    ax.plot([0], [float(decision["on_hand"])], "ko", ms=4, label="on hand now")
    ax.axhline(float(decision["reorder_point"]), color=RED, lw=1.2, label="reorder point")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("periods ahead", fontsize=8)
    ax.set_ylabel("units", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.set_title("stock position (on hand + on order)", fontsize=9, loc="left")
    ax.legend(fontsize=6.5, frameon=False)
