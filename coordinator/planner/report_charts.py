"""The planner report's two charts: the rounds' curves, and the network forecast's fans."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

BLUE, ORANGE, GREY = "#1f77b4", "#e67e22", "#7b8794"
FAN_GROUPS = 4  # the total and the largest groups


def round_curves(rounds: pd.DataFrame, best: int | None):
    """Left: training and validation loss by round; right: validation MAE against seasonal naive
    and the 80% interval's coverage. The best round is marked."""
    fig, (loss, skill) = plt.subplots(1, 2, figsize=(11.5, 3.2))
    loss.plot(rounds["round"], rounds["train loss"], marker="o", color=BLUE, label="training (pinball)")
    loss.plot(
        rounds["round"], rounds["validation loss"], marker="o", color=ORANGE, label="validation (pinball)"
    )
    loss.set_title("summed losses", fontsize=10, loc="left")
    skill.plot(
        rounds["round"], rounds["MAE / naive"], marker="o", color=ORANGE, label="validation MAE / naive"
    )
    skill.plot(rounds["round"], rounds["80% coverage"], marker="s", color=GREY, label="80% interval coverage")
    skill.axhline(1.0, color="black", lw=0.6)
    skill.axhline(0.8, color=GREY, lw=0.6, ls=":")
    skill.set_title("against seasonal naive (below 1 is better)", fontsize=10, loc="left")
    for ax in (loss, skill):
        if best:
            ax.axvline(best, color="#2e7d32", lw=1, ls="--", label=f"best round {best}")
        ax.set_xlabel("round", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def network_fans(network: pd.DataFrame):
    """Per group (the total first, then the largest): mean with its 50, 80 and 90% intervals."""
    order = network.groupby("group", sort=False)["mean"].sum().drop("total", errors="ignore")
    groups = ["total", *order.sort_values(ascending=False).index][:FAN_GROUPS]
    fig, axes = plt.subplots(1, len(groups), figsize=(11.5, 3.0), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        g = network[network["group"] == group].assign(date=lambda f: pd.to_datetime(f["date"]))
        for lo, hi, alpha, label in (
            ("q05", "q95", 0.13, "90%"),
            ("q10", "q90", 0.22, "80%"),
            ("q25", "q75", 0.4, "50%"),
        ):
            ax.fill_between(g["date"], g[lo], g[hi], color=BLUE, alpha=alpha, lw=0, label=f"{label} interval")
        ax.plot(g["date"], g["mean"], color=BLUE, lw=1.6, label="mean")
        ax.set_title(f"{group}", fontsize=10, loc="left")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=4))
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, frameon=False, loc="lower left")
    fig.tight_layout()
    return fig
