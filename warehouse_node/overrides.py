"""Operator overrides: pin a sku's replenishment status or block its promotion, auditably.

Overrides file columns: ``sku``, ``who``, ``why`` (required on every row), ``status`` (one of
REPLENISH_NOW / WARNING / OBSERVE, or empty to leave the model's), ``block_promotion`` (true/false,
empty = false). The decision keeps the model's suggestion beside the final one, with who and why,
so every choice can be traced. Rows that cannot be applied are listed with their reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.config import ConfigError, require_columns
from common.inventory import NEUTRAL, OBSERVE, PROMOTE, REPLENISH_NOW, WARNING, pinned_order_qty

REQUIRED = ("sku", "who", "why")
STATUSES = (REPLENISH_NOW, WARNING, OBSERVE)
_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n", ""}


def validate_overrides(frame: pd.DataFrame, decided: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable overrides indexed by sku, rejected rows with a reason)."""
    require_columns(frame, REQUIRED, "overrides file")
    if "status" not in frame.columns and "block_promotion" not in frame.columns:
        raise ConfigError("overrides file needs a status or a block_promotion column")
    df = frame.copy()
    for col in ("sku", "who", "why", "status", "block_promotion"):
        values = df[col] if col in df.columns else pd.Series("", index=df.index)
        df[col] = values.astype("string").fillna("").str.strip()
    df["status"] = df["status"].str.upper()
    reasons = pd.Series("", index=df.index)

    def reject(mask: pd.Series, why: str) -> None:
        reasons[mask & (reasons == "")] = why

    flag = df["block_promotion"].str.lower()
    reject(df["sku"] == "", "missing sku")
    reject(df["sku"].duplicated(keep=False), "duplicate sku in overrides file")
    reject((df["who"] == "") | (df["why"] == ""), "who and why are required for an override")
    reject(~df["status"].isin(["", *STATUSES]), f"status must be one of {', '.join(STATUSES)} or empty")
    reject(~flag.isin(_TRUE | _FALSE), "block_promotion must be true or false")
    reject((df["status"] == "") & flag.isin(_FALSE), "the row overrides nothing")
    reject(~df["sku"].isin(decided), "sku has no decision (unknown, or rejected in the stock file)")
    df["block_promotion"] = flag.isin(_TRUE)
    bad = reasons != ""
    return df[~bad].set_index("sku"), frame[bad].assign(reason=reasons[bad])


def apply_overrides(
    decisions: pd.DataFrame, strategy: pd.DataFrame, stock: pd.DataFrame, overrides: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final status and promotion next to the model's, with the override's who and why."""
    d, s = decisions.copy(), strategy.copy()
    o = overrides.reindex(d["sku"])
    pinned = (o["status"].fillna("") != "").to_numpy()
    d.insert(1, "model_status", d["status"])
    d.insert(3, "model_order_qty", d["order_qty"])
    d.loc[pinned, "status"] = o["status"].to_numpy()[pinned]
    rows = stock.set_index("sku").loc[d["sku"]]
    need = d["order_up_to"].to_numpy() - (rows["on_hand"] + rows["on_order"]).to_numpy()
    qty = [
        pinned_order_qty(*args)
        for args in zip(d["status"], d["model_order_qty"], need, rows["moq"], rows["pack_size"], strict=True)
    ]
    d["order_qty"] = np.where(pinned, qty, d["order_qty"])
    d["override_by"] = np.where(pinned, o["who"].fillna(""), "")
    d["override_why"] = np.where(pinned, o["why"].fillna(""), "")

    o = overrides.reindex(s["sku"])
    blocked = o["block_promotion"].fillna(False).astype(bool).to_numpy()
    s.insert(3, "model_promotion", s["promotion"])
    s.loc[blocked & (s["promotion"] == PROMOTE).to_numpy(), "promotion"] = NEUTRAL
    s["override_by"] = np.where(blocked, o["who"].fillna(""), "")
    s["override_why"] = np.where(blocked, o["why"].fillna(""), "")
    return d, s
