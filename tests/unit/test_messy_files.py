"""Messy files as real tools export them, generated: `prepare` and `replenish` never end in a
traceback, and every line of a CSV is a row read, a malformed line named, a blank line or the header."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.config import ConfigError
from common.tables import MalformedLine, read_table
from warehouse_node.cli import cli as node_cli

NODE_TOML = """[data]
path = "raw/{name}"
kind = "orders"
frequency = "D"
timestamp = "order_ts"
quantity = "quantity"
series_keys = ["sku"]
"""
CELLS = st.one_of(
    st.sampled_from(["2024-01-03", "2024-01-04T10:00:00+01:00", "03/01/2024", "45296", "1704240000", ""]),
    st.sampled_from(["12", "12,5", "1.234,5", "1,234", "-3", "1e300", "inf", "NaN", "abc", "0"]),
    st.sampled_from(["SKU-1", "00123", "Caf\u00e9", "\uff38L", " padded ", '"quoted"', "a,b"]),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=12
    ),
)
LINES = st.lists(st.lists(CELLS, min_size=1, max_size=5), min_size=1, max_size=25)
QUICK = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _csv_text(rows: list[list[str]], stray_quote: int | None) -> str:
    """The header and one line per row, cells joined as a careless exporter would (no quoting)."""
    lines = ["order_ts,sku,quantity"] + [",".join(row) for row in rows]
    if stray_quote is not None:
        at = stray_quote % len(lines[1:]) + 1
        lines[at] = '"' + lines[at]
    return "\n".join(lines) + "\n"


def _node(folder: Path, name: str) -> Path:
    (folder / "raw").mkdir(parents=True)
    (folder / "node.toml").write_text(NODE_TOML.format(name=name))
    return folder / "raw" / name


def _one_line_error_or_success(result) -> None:
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        result.exception
    )
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output


@QUICK
@given(rows=LINES, stray_quote=st.one_of(st.none(), st.integers(0, 100)))
def test_every_csv_line_is_read_named_or_refused(rows, stray_quote):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orders.csv"
        path.write_text(_csv_text(rows, stray_quote), encoding="utf-8")
        malformed: list[MalformedLine] = []
        try:
            frame = read_table(path, malformed)
        except ConfigError as exc:
            assert str(exc).startswith(f"cannot read {path}") and "\n" not in str(exc)
            return
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]
        blank = sum(1 for line in lines[1:] if not line)
        spanned = sum((m.last - m.line + 1) if m.last else 1 for m in malformed)
        assert 1 + len(frame) + spanned + blank == len(lines), (len(frame), [str(m) for m in malformed])


@QUICK
@given(rows=LINES, stray_quote=st.one_of(st.none(), st.integers(0, 100)))
def test_prepare_never_ends_in_a_traceback_on_a_messy_csv(rows, stray_quote):
    with tempfile.TemporaryDirectory() as tmp:
        path = _node(Path(tmp) / "node", "orders.csv")
        path.write_text(_csv_text(rows, stray_quote), encoding="utf-8")
        _one_line_error_or_success(CliRunner().invoke(node_cli, ["prepare", "--node", str(path.parents[1])]))


@QUICK
@given(
    columns=st.lists(
        st.one_of(
            st.lists(st.one_of(st.none(), st.integers(-(10**12), 10**12)), min_size=3, max_size=3),
            st.lists(
                st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=3, max_size=3
            ),
            st.lists(st.one_of(st.none(), CELLS), min_size=3, max_size=3),
        ),
        min_size=3,
        max_size=3,
    )
)
def test_prepare_never_ends_in_a_traceback_on_a_messy_parquet(columns):
    frame = pd.DataFrame(dict(zip(["order_ts", "sku", "quantity"], columns, strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        path = _node(Path(tmp) / "node", "orders.parquet")
        try:
            frame.to_parquet(path)
        except (ValueError, TypeError, OverflowError, Exception):
            frame.astype(str).to_parquet(path)
        _one_line_error_or_success(CliRunner().invoke(node_cli, ["prepare", "--node", str(path.parents[1])]))


@QUICK
@given(rows=st.lists(st.lists(CELLS, min_size=3, max_size=4), min_size=1, max_size=12))
def test_replenish_never_ends_in_a_traceback_and_every_stock_row_is_decided_or_rejected(rows):
    dates = pd.date_range("2025-01-11", periods=7, freq="D")
    forecasts = pd.DataFrame(
        [
            {"sku": s, "date": d, "mean": 10.0, "q10": 6.0, "q50": 10.0, "q90": 14.0}
            for s in ("SKU-1", "00123")
            for d in dates
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        forecasts.to_csv(folder / "f.csv", index=False)
        lines = ["sku,on_hand,lead_time"] + [",".join(row) for row in rows]
        (folder / "stock.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        args = ["replenish", "--forecasts", str(folder / "f.csv"), "--stock", str(folder / "stock.csv")]
        result = CliRunner().invoke(node_cli, [*args, "--out", str(folder / "out")])
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
        assert result.exit_code in (0, 1, 3), result.output  # 3: some rows rejected, with reasons
        decided = folder / "out" / "decisions.csv"
        if result.exit_code != 1:
            rejected = pd.read_csv(folder / "out" / "rejected.csv", dtype=str)
            spans = rejected["reason"].str.extract(r"^lines (\d+)-(\d+) ").astype(float)
            lines_rejected = int((spans[1] - spans[0] + 1).fillna(1).sum())
            data_lines = [line for line in lines[1:] if line]
            assert len(pd.read_csv(decided)) + lines_rejected == len(data_lines), rejected["reason"].tolist()
            assert np.isfinite(pd.read_csv(decided)["order_qty"].astype(float)).all()
