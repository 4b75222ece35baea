"""The harness of the bad-input table (tests/unit/test_bad_input_table.py): a warehouse copied afresh
for each case, the case record, and the helpers that damage one input."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common import crypto
from warehouse_node.pipeline import QUARANTINE_FILE


@dataclass(frozen=True)
class Base:
    """A prepared warehouse with a forecast, copied afresh for every case."""

    node: Path
    forecasts: Path
    keys: Path


@dataclass(frozen=True)
class Work:
    node: Path
    forecasts: Path
    keys: Path
    tmp: Path
    before: pd.DataFrame  # the base quarantine
    notes: dict = field(default_factory=dict)  # values a case learns while damaging its input

    @property
    def empty(self) -> Path:
        (self.tmp / "empty").mkdir(exist_ok=True)
        return self.tmp / "empty"

    def fields(self) -> dict[str, object]:
        other = self.tmp / "other" / crypto.MANIFEST_FILE
        return {
            "tmp": self.tmp,
            "node": self.node,
            "keys": self.keys,
            "fp": crypto.load_context(self.keys / crypto.PUBLIC_CONTEXT_FILE).fingerprint,
            "other_fp": json.loads(other.read_text())["fingerprint"] if other.is_file() else "",
            "last_line": len(self.orders.read_bytes().splitlines()) if self.orders.is_file() else 0,
            **self.notes,
        }

    @property
    def orders(self) -> Path:
        return self.node / "raw" / "orders.csv"

    @property
    def stock(self) -> Path:
        return self.node / "stock.csv"

    def edit_orders(self, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        change(pd.read_csv(self.orders, dtype=str)).to_csv(self.orders, index=False)

    def edit_stock(self, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        change(pd.read_csv(self.stock)).to_csv(self.stock, index=False)

    def set_toml(self, old: str, new: str, encoding: str = "utf-8") -> None:
        toml = self.node / "node.toml"
        text = toml.read_text()
        assert old in text
        toml.write_text(text.replace(old, new), encoding=encoding)

    def replenish(self, *extra: str) -> list[str]:
        files = ["--forecasts", str(self.forecasts), "--stock", str(self.stock)]
        return ["replenish", *files, "--out", str(self.tmp / "decide"), *extra]

    def quarantined(self, reason: str) -> int:
        """Rows quarantined for ``reason`` by this case, beyond those the base data already had."""
        now = pd.read_csv(self.node / "private" / QUARANTINE_FILE)
        return int(now["reason"].str.startswith(reason).sum()) - int(
            self.before["reason"].str.startswith(reason).sum()
        )

    def rejected(self, reason: str, name: str = "rejected.csv") -> int:
        r = pd.read_csv(self.tmp / "decide" / name)
        return int(r["reason"].str.contains(reason, regex=False).sum())


@dataclass(frozen=True)
class Case:
    name: str
    cli: object  # the click group, or None for a direct call
    run: Callable[[Work], list[str] | Callable[[], object]]
    exit_code: int
    message: str | None  # the exact last line of output (None: the command succeeds quietly)
    lost: Callable[[Work], bool] | None = None  # every row not used is accounted for


def break_rows(column: str, value: str, rows: list[int]) -> Callable[[Work], list[str]]:
    def run(w: Work) -> list[str]:
        def change(df: pd.DataFrame) -> pd.DataFrame:
            df.loc[rows, column] = value
            return df

        w.edit_orders(change)
        return ["prepare", "--node", str(w.node)]

    return run


def run_after(edit: Callable[[Work], None], command: str = "prepare") -> Callable[[Work], list[str]]:
    def run(w: Work) -> list[str]:
        edit(w)
        return [command, "--node", str(w.node)]

    return run


def stock_edit(change: Callable[[pd.DataFrame], pd.DataFrame], *extra: str) -> Callable[[Work], list[str]]:
    def run(w: Work) -> list[str]:
        w.edit_stock(change)
        return w.replenish(*extra)

    return run


def set_cell(df: pd.DataFrame, column: str, value: object, row: int = 0) -> pd.DataFrame:
    df[column] = df[column].astype(object)
    df.loc[row, column] = value
    return df


def write_file(w: Work, name: str, text: str | bytes) -> Path:
    path = w.tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def ciphertext(w: Work, damage: Callable[[bytes], bytes]) -> Callable[[], object]:
    key = crypto.load_context(w.keys / crypto.SECRET_CONTEXT_FILE)
    vec = crypto.encrypt(key, np.ones(50))
    blob = damage(vec.to_bytes())
    w.notes["body"] = sum(len(c) for c in vec.chunks)
    w.notes["short"] = w.notes["body"] - (len(vec.to_bytes()) - len(blob))
    return lambda: crypto.decrypt(key, crypto.EncryptedVector.from_bytes(blob))


def other_key_ciphertext(w: Work) -> Callable[[], object]:
    crypto.keygen(w.tmp / "other")
    other = crypto.load_context(w.tmp / "other" / crypto.SECRET_CONTEXT_FILE)
    ours = crypto.load_context(w.keys / crypto.SECRET_CONTEXT_FILE)
    return lambda: crypto.decrypt(ours, crypto.encrypt(other, np.ones(5)))


def ean13(text: str) -> str:
    """A 13-digit EAN for ``text``, with its GS1 check digit (what a retail export holds as sku)."""
    body = f"400{int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10**9:09d}"
    weighted = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - weighted % 10) % 10)


def forecast_sources(w: Work) -> set[tuple[str, str]]:
    """(source, reason) of the rows `fedstock-node forecast` wrote."""
    frame = pd.read_parquet(w.node / "out" / "forecasts.parquet")
    return set(zip(frame["source"], frame["source_reason"], strict=True))


def open_quote(line: str) -> str:
    """The line with its last quote deleted: the quoted cell it closed is left open."""
    at = line.rindex('"')
    return line[:at] + line[at + 1 :]


def unquoted(line: str) -> str:
    """The line without quotes (the commas they protected become spaces): no quote closes one left open."""
    return re.sub(r'"([^"]*)"', lambda m: m.group(1).replace(",", " "), line)


def make_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def edit_lines(path: Path, change: Callable[[int, str], str]) -> None:
    """Rewrite a CSV line by line (line 0 is the header), bypassing pandas."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(i, line) for i, line in enumerate(lines)) + "\n")


def whole_packs(w: Work, pack: float) -> bool:
    """Every order is a positive whole number of ``pack``-sized packs."""
    qty = pd.read_csv(w.tmp / "decide" / "decisions.csv")["order_qty"]
    packs = qty / pack
    return bool((qty > 0).all() and (abs(packs - packs.round()) < 1e-6).all())


def decided_rows(w: Work) -> int:
    return len(pd.read_csv(w.tmp / "decide" / "decisions.csv"))


def periods_node(w: Work, rows: list[tuple[str, str, str]]) -> list[str]:
    """Switch the node to per-period data (weekly sales per dept) with the given rows."""
    lines = ["Date,Dept,Weekly_Sales", *(",".join(r) for r in rows)]
    (w.node / "raw" / "weekly.csv").write_text("\n".join(lines) + "\n")
    (w.node / "node.toml").write_text(
        '[node]\nname = "weekly"\n\n[data]\npath = "raw/weekly.csv"\nkind = "periods"\n'
        'frequency = "W-FRI"\ntimestamp = "Date"\nquantity = "Weekly_Sales"\nseries_keys = ["Dept"]\n'
    )
    return ["prepare", "--node", str(w.node)]


def fresh_work(base: Base, tmp: Path) -> Work:
    shutil.copytree(base.node, tmp / "node")
    shutil.copy(base.forecasts, tmp / "forecasts.parquet")
    before = pd.read_csv(tmp / "node" / "private" / QUARANTINE_FILE)
    return Work(tmp / "node", tmp / "forecasts.parquet", base.keys, tmp, before)
