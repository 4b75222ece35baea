"""Bad input, counted: every case gets its exact one-line message, the right exit code, and loses nothing.

Each case damages one input of a small synthetic warehouse (data file, node config, stock file,
strategy or overrides file, keys, ciphertexts, run config, command-line arguments) and runs the
command an operator or the planner would run. Where a command can go on, the rows it could not use
are in its quarantine or rejected file, counted exactly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from common import crypto
from common.config import load_node_config
from common.model import build_model, model_vector
from common.settings import Settings
from common.synthetic import SyntheticSpec, write_warehouse
from coordinator.planner.cli import cli as planner
from tests.bad_input import (
    Base,
    Case,
    Work,
    break_rows,
    ciphertext,
    decided_rows,
    ean13,
    edit_lines,
    forecast_sources,
    fresh_work,
    make_folder,
    open_quote,
    other_key_ciphertext,
    periods_node,
    run_after,
    set_cell,
    stock_edit,
    unquoted,
    whole_packs,
    write_file,
)
from tests.conftest import model_config
from warehouse_node.cli import EXIT_PARTIAL
from warehouse_node.cli import cli as node
from warehouse_node.model_store import MODEL_FILE, save_global_model
from warehouse_node.pipeline import MAP_FILE, forecast, prepare_node

FUTURE, SECRET = 'future = "raw/future.csv"', 'secret_context = "keys/secret.ctx"'  # lines of node.toml


def toml_after(line: str, text: str):
    """`prepare` after ``text`` is added to node.toml below ``line``."""
    return run_after(lambda w: w.set_toml(line, line + text))


SPEC = SyntheticSpec(items=3, days=200, horizon_days=14, customers=20)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("bad-input-base")
    keys = root / "keys"
    crypto.keygen(keys)
    node_dir = root / "node"
    write_warehouse(node_dir, 0, SPEC, seed=5)
    cfg = load_node_config(node_dir)
    prepare_node(cfg)
    m = model_config(lookback=14, horizon=14, hidden=8)
    save_global_model(cfg, model_vector(build_model(m, 0)), m, 1)
    fc = forecast(cfg)
    fc.to_parquet(root / "forecasts.parquet", index=False)
    return Base(node_dir, root / "forecasts.parquet", keys)


def raw_line(name: str, number: int, change: Callable[[str], str], command: str = "prepare"):
    """``command`` after line ``number`` (0: the header) of NODE/raw/``name`` is changed."""
    return run_after(
        lambda w: edit_lines(w.node / "raw" / name, lambda i, line: change(line) if i == number else line),
        command,
    )


def two_date_orders(w: Work) -> None:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[[4, 5], "order_ts"] = ["13/02/2023 10:00", "02/13/2023 10:00"]
        return df

    w.edit_orders(change)


def nan_in_forecast(w: Work) -> None:
    """Blank one quantile of the first stock sku's forecast; note the date it names."""
    fc = pd.read_parquet(w.forecasts)
    row = fc.index[fc["sku"] == pd.read_csv(w.stock)["sku"][0]][2]
    fc.loc[row, "q50"] = np.nan
    w.notes["date"] = str(fc.loc[row, "date"])[:10]
    fc.to_parquet(w.forecasts)


WEEKS = [str(d.date()) for d in pd.date_range("2011-01-07", periods=20, freq="W-FRI")]

# fmt: off
CASES: list[Case] = [
    # ---- data files -------------------------------------------------------------------------
    Case("quantity-not-a-number", node, break_rows("quantity", "abc", [3, 7]), 0, None,
         lambda w: w.quarantined("missing or non-numeric quantity") == 2),
    Case("date-does-not-parse", node, break_rows("order_ts", "31/31/2020", [4]), 0, None,
         lambda w: w.quarantined("unreadable timestamp") == 1),
    Case("dates-in-both-day-month-orders", node, run_after(two_date_orders),
         1, "Error: timestamp column 'order_ts' mixes day/month and month/day dates ('13/02/2023 10:00', "
         "'02/13/2023 10:00'): write one form, best ISO such as 2024-01-31"),
    Case("dates-that-read-either-way", node, break_rows("order_ts", "05/02/2023", [4]), 1,
         "Error: timestamp column 'order_ts' has dates such as '05/02/2023' that read as day/month or "
         'month/day: set date_order = "day-first" or "month-first" in [data]'),
    Case("future-file-without-dates", node,
         raw_line("future.csv", 0, lambda line: line.replace("date", "day"), "forecast"),
         1, "Error: future file {node}/raw/future.csv is missing columns: date "
         "(its columns: sku, day, promo, unit_price)"),
    Case("future-file-promotion-not-a-number", node,
         raw_line("future.csv", 1, lambda line: line.replace(",0,", ",lots,"), "forecast"),
         1, "Error: future file {node}/raw/future.csv column 'promo': 1 values that are not numbers, "
         "the first 'lots' on line 2"),
    Case("calendar-unreadable-date", node,
         raw_line("calendar.csv", 1, lambda line: "someday,new_year"),
         1, "Error: calendar {node}/raw/calendar.csv: 1 unreadable dates, the first 'someday' on line 2"),
    Case("date-mistyped-into-the-future", node, break_rows("order_ts", "2204-02-01T10:00:00", [4]), 0, None,
         lambda w: w.quarantined("timestamp after today") == 1),
    Case("date-mistyped-a-century-early", node, break_rows("order_ts", "1924-02-01T10:00:00", [4]), 0,
         None, lambda w: w.quarantined("stray timestamp") == 1),
    Case("missing-series-key", node, break_rows("sku", "", [5]), 0, None,
         lambda w: w.quarantined("missing series key") == 1),
    Case("negative-quantity-is-a-return", node, break_rows("quantity", "-3", [6]), 0, None,
         lambda w: w.quarantined("return: negative order line") == 1),
    Case("price-unreadable-is-repaired", node, break_rows("unit_price", "12,99 EUR", [8]), 0, None,
         lambda w: w.quarantined("unreadable price") == 1),
    Case("duplicate-period-rows-summed", node,
         lambda w: periods_node(w, [(d, "1", "10") for d in WEEKS] + [(WEEKS[3], "1", "5")]), 0, None,
         lambda w: w.quarantined("duplicate period row") == 2),
    Case("negative-period-sales-clipped", node,
         lambda w: periods_node(w, [(d, "1", "-4" if i == 2 else "10") for i, d in enumerate(WEEKS)]), 0,
         None, lambda w: w.quarantined("negative demand clipped") == 1),
    Case("configured-column-missing", node,
         run_after(lambda w: w.set_toml('quantity = "quantity"', 'quantity = "qty"')), 1,
         "Error: data file is missing columns: qty (its columns: order_id, order_ts, sku, category, "
         "quantity, unit_price, promo, customer_id, customer_name, customer_email and 2 more); "
         "see [data] in node.toml"),
    Case("empty-file", node, run_after(lambda w: w.orders.write_text("")), 1,
         "Error: cannot read {node}/raw/orders.csv: the file is empty"),
    Case("header-only", node,
         run_after(lambda w: w.orders.write_text(w.orders.read_text().splitlines()[0] + "\n")), 1,
         "Error: no usable rows after parsing: check the column mapping"),
    Case("wrong-encoding", node,
         run_after(lambda w: w.orders.write_bytes(w.orders.read_text().encode("utf-16"))), 1,
         "Error: cannot read {node}/raw/orders.csv: not UTF-8 text (found byte 0xff); save it as UTF-8"),
    Case("latin1-bytes", node,
         run_after(lambda w: w.orders.write_bytes(w.orders.read_bytes().replace(b"Lane", b"Stra\xdfe"))),
         1, "Error: cannot read {node}/raw/orders.csv: not UTF-8 text (found byte 0xdf); save it as UTF-8"),
    Case("spreadsheet-saved-as-csv", node,
         run_after(lambda w: w.orders.write_bytes(b"PK\x03\x04" + bytes(64))), 1,
         "Error: cannot read {node}/raw/orders.csv: it is a zip archive (an Excel .xlsx workbook?), not CSV "
         "text"),
    Case("semicolon-separated", node,
         run_after(lambda w: w.orders.write_text("order_ts;sku;quantity\n2024-01-01;A;3\n")), 1,
         "Error: cannot read {node}/raw/orders.csv: it is semicolon-separated (header "
         "'order_ts;sku;quantity'); save it comma-separated"),
    Case("rows-with-an-unnamed-extra-field", node,
         run_after(lambda w: edit_lines(w.orders, lambda i, line: line + ",x" if i else line)), 1,
         "Error: cannot read {node}/raw/orders.csv: its first data line has more fields than the header"),
    Case("one-ragged-row-quarantined", node,
         run_after(lambda w: edit_lines(w.orders, lambda i, line: line + ",x" if i == 2 else line)), 0,
         None, lambda w: w.quarantined("malformed line: 13 fields, the header 12") == 1),
    Case("a-quote-left-open-swallowing-two-lines-is-quarantined-by-line", node,
         run_after(lambda w: edit_lines(w.orders, lambda i, line: open_quote(line) if i == 4 else line)),
         0, None, lambda w: w.quarantined("malformed lines: one quoted cell runs over 2 lines") == 1),
    Case("a-quote-left-open-to-the-end-of-the-file-is-refused", node,
         run_after(lambda w: edit_lines(w.orders, lambda i, line: open_quote(line) if i == 4
                                        else unquoted(line) if i > 4 else line)), 1,
         "Error: cannot read {node}/raw/orders.csv: lines 5-{last_line} are one quoted cell (an unbalanced "
         "quote?): close or remove the quote"),
    Case("trailing-comma-on-every-row-read-as-is", node,
         run_after(lambda w: edit_lines(w.orders, lambda i, line: line + ("," if i else ""))), 0, None,
         lambda w: w.quarantined("") == 0),
    Case("header-names-a-column-twice", node,
         run_after(lambda w: edit_lines(w.orders, lambda i, line: line.replace("promo,", "unit_price,")
                                              if i == 0 else line)),
         1, "Error: cannot read {node}/raw/orders.csv: column 'unit_price' appears more than once in the "
         "header"),
    Case("data-file-not-found", node,
         run_after(lambda w: w.set_toml('path = "raw/orders.csv"', 'path = "raw/none.csv"')), 1,
         "Error: data file not found: {node}/raw/none.csv"),
    # ---- node configuration -----------------------------------------------------------------
    Case("node-toml-not-toml", node, run_after(lambda w: (w.node / "node.toml").write_text("[data\n")),
         1, "Error: {node}/node.toml is not valid TOML: Expected ']' at the end of a table "
         "declaration (at line 1, column 6)"),
    Case("node-toml-without-data", node,
         run_after(lambda w: (w.node / "node.toml").write_text('[node]\nname = "x"\n')), 1,
         "Error: {node}/node.toml has no [data] section"),
    Case("unknown-data-key", node,
         run_after(lambda w: w.set_toml('kind = "orders"', 'kind = "orders"\nlead = 3')), 1,
         "Error: {node}/node.toml: [data] has unknown keys: lead (known: path, kind, frequency, timestamp, "
         "quantity, series_keys, price, promo, holiday, static, observed, drop_columns, calendar, future, "
         "cap_outliers, date_order, not_personal)"),
    Case("misspelt-section", node, toml_after(FUTURE, "\n[netwrok]\nshare = false"), 1,
         "Error: {node}/node.toml has unknown sections: netwrok (known: node, data, network, training, "
         "forecast)"),
    Case("unknown-node-key", node, toml_after(SECRET, '\nkey_fingerprnt = "ab"'), 1,
         "Error: {node}/node.toml: [node] has unknown keys: key_fingerprnt (known: name, secret_context, "
         "key_fingerprint)"),
    Case("network-share-not-boolean", node, toml_after(FUTURE, '\n[network]\nshare = "no"'), 1,
         "Error: {node}/node.toml: [network] share must be true or false, got 'no' (text)"),
    Case("training-device-unknown", node, toml_after(FUTURE, '\n[training]\ndevice = "gpu"'), 1,
         "Error: {node}/node.toml: [training] device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    Case("bad-frequency", node, run_after(lambda w: w.set_toml('frequency = "D"', 'frequency = "M"')), 1,
         "Error: {node}/node.toml: [data] frequency must be 'D', 'W' or 'W-<DAY>', got 'M'"),
    Case("cap-outliers-not-boolean", node,
         run_after(lambda w: w.set_toml('kind = "orders"', 'kind = "orders"\ncap_outliers = "no"')), 1,
         "Error: {node}/node.toml: [data] cap_outliers must be true or false, got 'no' (text)"),
    Case("personal-column-as-series-key", node,
         run_after(lambda w: w.set_toml('series_keys = ["sku"]', 'series_keys = ["customer_email"]')),
         1, "Error: column 'customer_email' is used as a key or attribute but column name "
         "suggests personal data; map a non-personal column instead, or list it in [data] not_personal = "
         '["customer_email"] if it holds no personal data'),
    Case("ean-codes-as-series-keys-are-not-phone-numbers", node,
         run_after(lambda w: w.edit_orders(lambda df: df.assign(sku=df["sku"].map(ean13)))), 0, None,
         lambda w: w.quarantined("") == 0),
    Case("a-column-declared-not-personal-may-be-an-attribute", node,
         run_after(lambda w: (w.edit_orders(lambda df: df.rename(columns={"category": "customer_segment"})),
                              w.set_toml('static = ["category"]', 'static = ["customer_segment"]\n'
                                         'not_personal = ["customer_segment"]'))), 0, None),
    Case("node-toml-string-where-a-table-is-expected", node,
         run_after(lambda w: w.set_toml("[node]", 'network = "no"\n[node]')), 1,
         "Error: {node}/node.toml: network must be a [network] table of keys, got 'no' (text)"),
    Case("node-toml-number-where-a-column-is-expected", node,
         run_after(lambda w: w.set_toml('timestamp = "order_ts"', "timestamp = 3")), 1,
         "Error: {node}/node.toml: [data] timestamp must be a column name (text), got 3 (a number)"),
    Case("node-toml-boolean-where-a-column-is-expected", node,
         run_after(lambda w: w.set_toml('promo = "promo"', "promo = true")), 1,
         "Error: {node}/node.toml: [data] promo must be a column name (text), got true (a boolean)"),
    Case("node-toml-number-in-a-list-of-columns", node,
         run_after(lambda w: w.set_toml('series_keys = ["sku"]', 'series_keys = ["sku", 3]')), 1,
         "Error: {node}/node.toml: [data] series_keys must be a list of column names (text), got "
         "['sku', 3] (a list)"),
    Case("node-toml-number-where-a-path-is-expected", node,
         run_after(lambda w: w.set_toml('path = "raw/orders.csv"', "path = 5")), 1,
         "Error: {node}/node.toml: [data] path must be a path to a file (text), got 5 (a number)"),
    Case("node-toml-folder-where-a-file-is-expected", node,
         run_after(lambda w: w.set_toml('path = "raw/orders.csv"', 'path = "raw"')), 1,
         "Error: {node}/node.toml: [data] path = 'raw' names a folder ({node}/raw), not a file"),
    Case("node-toml-with-a-byte-order-mark-is-read", node,
         run_after(lambda w: (w.node / "node.toml").write_bytes(b"\xef\xbb\xbf" + (w.node / "node.toml")
                                                              .read_bytes())), 0, None),
    Case("node-toml-in-a-legacy-encoding", node,
         run_after(lambda w: w.set_toml('name = "', 'name = "Caf\u00e9 ', encoding="latin-1")), 1,
         "Error: {node}/node.toml is not UTF-8 text (found byte 0xe9); save it as UTF-8"),
    Case("node-folder-without-node-toml", node, run_after(lambda w: (w.node / "node.toml").unlink()), 1,
         "Error: node config not found: {node}/node.toml"),
    # ---- outputs: refused before any work ----------------------------------------------------
    Case("decisions-folder-under-a-file", node, lambda w: w.replenish("--out", str(w.stock / "out")), 1,
         "Error: output folder {node}/stock.csv/out cannot be made: {node}/stock.csv is a file, not a "
         "folder"),
    Case("decisions-folder-is-a-file", node, lambda w: w.replenish("--out", str(w.stock)), 2, None),
    Case("forecast-file-under-a-file", node,
         lambda w: ["forecast", "--node", str(w.node), "--out", str(w.orders / "f.parquet")], 1,
         "Error: output file {node}/raw/orders.csv/f.parquet cannot be made: {node}/raw/orders.csv is a "
         "file, not a folder"),
    Case("forecast-file-is-a-folder", node,
         lambda w: ["forecast", "--node", str(w.node), "--out", str(make_folder(w.tmp / "f.parquet"))], 2,
         "Error: Invalid value for '--out': File '{tmp}/f.parquet' is a directory."),
    Case("private-folder-is-a-file", node,
         run_after(lambda w: (shutil.rmtree(w.node / "private"), (w.node / "private").write_text("x"))), 1,
         "Error: output folder {node}/private is a file"),
    # ---- stock, forecasts, strategy and overrides files --------------------------------------
    Case("stock-missing-column", node, stock_edit(lambda df: df.drop(columns=["on_hand"])), 1,
         "Error: stock file is missing columns: on_hand (its columns: sku, on_order, lead_time, "
         "review_period, service_level, moq, pack_size, unit_cost)"),
    Case("stock-file-with-a-header-only", node, stock_edit(lambda df: df.iloc[:0]), 1,
         "Error: stock file {node}/stock.csv has no rows under its header: nothing to decide"),
    Case("stock-on-hand-gigantic", node, stock_edit(lambda df: set_cell(df, "on_hand", "1e300")),
         EXIT_PARTIAL, "  1 x on_hand is beyond 1e+12: not a stock quantity",
         lambda w: w.rejected("beyond") == 1),
    Case("stock-fractional-pack-orders-whole-packs", node,
         stock_edit(lambda df: df.assign(pack_size="0.4", moq="0", on_hand="0", on_order="0")), 0, None,
         lambda w: whole_packs(w, 0.4)),
    Case("stock-unknown-sku", node, stock_edit(lambda df: set_cell(df, "sku", "SKU-NOPE")), EXIT_PARTIAL,
         "  1 x unknown sku: no forecast for it", lambda w: w.rejected("no forecast") == 1),
    Case("stock-duplicate-sku", node, stock_edit(lambda df: pd.concat([df, df.iloc[[0]]], ignore_index=True)),
         EXIT_PARTIAL, "  2 x duplicate sku in stock file", lambda w: w.rejected("duplicate") == 2),
    Case("stock-negative-on-hand", node, stock_edit(lambda df: set_cell(df, "on_hand", -5)), EXIT_PARTIAL,
         "  1 x on_hand is negative", lambda w: w.rejected("on_hand") == 1),
    Case("stock-nan-on-hand", node, stock_edit(lambda df: set_cell(df, "on_hand", np.nan)), EXIT_PARTIAL,
         "  1 x on_hand is missing or not a number", lambda w: w.rejected("on_hand") == 1),
    Case("stock-lead-time-zero", node, stock_edit(lambda df: set_cell(df, "lead_time", 0)), EXIT_PARTIAL,
         "  1 x lead_time must be a whole number of periods >= 1", lambda w: w.rejected("lead_time") == 1),
    Case("stock-lead-time-not-integer", node, stock_edit(lambda df: set_cell(df, "lead_time", 1.5)),
         EXIT_PARTIAL, "  1 x lead_time must be a whole number of periods >= 1",
         lambda w: w.rejected("lead_time") == 1),
    Case("stock-service-level-outside-0-1", node, stock_edit(lambda df: set_cell(df, "service_level", 1.2)),
         EXIT_PARTIAL, "  1 x service_level must be in (0, 1)", lambda w: w.rejected("service_level") == 1),
    Case("stock-on-hand-not-a-number", node, stock_edit(lambda df: set_cell(df, "on_hand", "lots")),
         EXIT_PARTIAL, "  1 x on_hand is missing or not a number", lambda w: w.rejected("on_hand") == 1),
    Case("stock-on-order-due-not-a-number", node,
         stock_edit(lambda df: df.assign(on_order_due=["soon"] + [""] * (len(df) - 1))), EXIT_PARTIAL,
         "  1 x on_order_due is not a number", lambda w: w.rejected("on_order_due") == 1),
    Case("stock-empty-file", node, lambda w: (w.stock.write_text(""), w.replenish())[1], 1,
         "Error: cannot read {node}/stock.csv: the file is empty"),
    Case("stock-tab-separated", node,
         lambda w: (w.stock.write_text(w.stock.read_text().replace(",", "\t")), w.replenish())[1], 1,
         "Error: cannot read {node}/stock.csv: it is tab-separated (header "
         "'sku\\ton_hand\\ton_order...'); "
         "save it comma-separated"),
    Case("stock-ragged-row-rejected", node,
         lambda w: (edit_lines(w.stock, lambda i, line: line + ",9" if i == 2 else line), w.replenish())[1],
         EXIT_PARTIAL, "  1 x line 3 has 10 fields, the header 9",
         lambda w: w.rejected("line 3 has 10 fields") == 1),
    Case("stock-header-spaces-trimmed", node,
         stock_edit(lambda df: df.rename(columns=lambda c: f" {c} ")), 0, None,
         lambda w: decided_rows(w) == len(pd.read_csv(w.stock))),
    Case("forecasts-missing-mean", node,
         lambda w: (pd.read_parquet(w.forecasts).drop(columns=["mean"]).to_parquet(w.forecasts),
                    w.replenish())[1],
         1, "Error: forecasts file is missing columns: mean (its columns: node, sku, date, q02, q05, q10, "
         "q25, q50, q75, q90 and 4 more)"),
    Case("forecasts-nan-quantile-rejects-its-sku", node, lambda w: (nan_in_forecast(w), w.replenish())[1],
         EXIT_PARTIAL, "  1 x its forecast has a missing or non-finite value ({date})",
         lambda w: w.rejected("non-finite") == 1),
    Case("forecasts-without-the-named-node", node, lambda w: w.replenish("--node", "warehouse-99"), 1,
         "Error: forecasts file has no rows for node 'warehouse-99' (its nodes: warehouse-00)"),
    Case("strategy-unknown-setting", node,
         lambda w: w.replenish("--strategy-config", str(write_file(w, "s.toml", "promote_now = 0.5\n"))), 1,
         "Error: unknown strategy setting 'promote_now': choose from promo_uplift, "
         "suppress_stockout_prob, promote_max_stockout_prob, promote_min_cover, paths, seed"),
    Case("overrides-unknown-status", node,
         lambda w: w.replenish("--overrides", str(write_file(
             w, "o.csv", f"sku,who,why,status\n{pd.read_csv(w.stock)['sku'][0]},ana,test,PANIC\n"))),
         EXIT_PARTIAL, "  1 x status must be one of REPLENISH_NOW, WARNING, OBSERVE or empty",
         lambda w: w.rejected("status must be one of", "overrides_rejected.csv") == 1),
    Case("overrides-ragged-row-rejected", node,
         lambda w: w.replenish("--overrides", str(write_file(
             w, "o.csv", "sku,who,why,status\n{},ana,test,OBSERVE\n{},ana,test,OBSERVE,extra\n".format(
                 *pd.read_csv(w.stock)["sku"])))),
         EXIT_PARTIAL, "  1 x line 3 has 5 fields, the header 4",
         lambda w: w.rejected("line 3 has 5 fields", "overrides_rejected.csv") == 1),
    # ---- keys and ciphertexts ---------------------------------------------------------------
    Case("keygen-would-overwrite", node, lambda w: ["keygen", "--out", str(w.keys), "--publish", "p"], 1,
         "Error: {keys}/secret.ctx exists: refusing to overwrite keys"),
    Case("ciphertext-truncated", None, lambda w: ciphertext(w, lambda b: b[:-3000]), 1,
         "corrupt ciphertext: header announces {body} bytes, body has {short}"),
    Case("ciphertext-bad-header", None, lambda w: ciphertext(w, lambda b: b"garbage" + b[7:]), 1,
         "corrupt ciphertext: missing fedstock CKKS header"),
    Case("ciphertext-corrupt-body", None, lambda w: ciphertext(w, lambda b: b[:-5000] + bytes(5000)), 1,
         "corrupt ciphertext: failed to parse CKKS stream"),
    Case("ciphertext-under-another-key", None, other_key_ciphertext, 1,
         "ciphertext made under key {other_fp}, ours is {fp}"),
    Case("context-file-not-a-context", None,
         lambda w: lambda: crypto.load_context(write_file(w, "x.ctx", b"not a context")), 1,
         "{tmp}/x.ctx is not a TenSEAL context (failed to parse stream)"),
    Case("context-with-another-fingerprint", None,
         lambda w: lambda: crypto.load_context(w.keys / crypto.PUBLIC_CONTEXT_FILE, "0" * 32), 1,
         "context {keys}/public.ctx has fingerprint {fp}, expected "
         "00000000000000000000000000000000: wrong key material"),
    Case("global-model-file-damaged-falls-back", node,
         run_after(lambda w: (w.node / "private" / MODEL_FILE).write_bytes(b"garbage"), "forecast"), 0,
         None, lambda w: forecast_sources(w) == {("fallback", "the kept global model cannot be read (the "
                                                  "site keeps a new one in its next round)")}),
    Case("series-map-damaged", node,
         run_after(lambda w: (w.node / "private" / MAP_FILE).write_bytes(b"junk"), "forecast"), 1,
         "Error: {node}/private/series_map.parquet is damaged (not a readable Parquet file): rebuild it "
         "with fedstock-node prepare --node {node}"),
    # ---- run config -------------------------------------------------------------------------
    Case("run-config-epochs-not-integer", None,
         lambda w: lambda: Settings.defaults(local_epochs="two"), 1,
         "run config 'local-epochs' must be int, got 'two'"),
    Case("run-config-learning-rate-not-number", None,
         lambda w: lambda: Settings.defaults(learning_rate="fast"), 1,
         "run config 'learning-rate' must be float, got 'fast'"),
    Case("run-config-rounds-fractional", None, lambda w: lambda: Settings.defaults(num_rounds=2.5), 1,
         "run config 'num-rounds' must be int, got 2.5"),
    # ---- command-line arguments -------------------------------------------------------------
    Case("unknown-option", node, lambda w: w.replenish("--frobnicate"), 2,
         "Error: No such option '--frobnicate'. Did you mean '--forecasts'?"),
    Case("unknown-policy", node, lambda w: w.replenish("--policy", "guess"), 2,
         "Error: Invalid value for '--policy': 'guess' is not one of 'seed-rule', "
         "'classical', 'probabilistic'."),
    Case("simulate-zero-rounds", planner,
         lambda w: ["simulate", "--dataset", "walmart", "--data", str(w.tmp), "--out", str(w.tmp / "o"),
                    "--rounds", "0"],
         2, "Error: Invalid value for '--rounds': 0 is not in the range 1<=x<=200."),
    Case("simulate-until-not-a-date", planner,
         lambda w: ["simulate", "--dataset", "walmart", "--data", str(w.tmp), "--out", str(w.tmp / "o"),
                    "--until", "27/04/2012"],
         2, "Error: Invalid value for '--until': '27/04/2012' does not match the format '%Y-%m-%d'."),
    Case("resume-not-a-run", planner, lambda w: ["resume", str(w.empty)], 1,
         "Error: {tmp}/empty holds no demo.json: not a demo run folder"),
    Case("report-not-a-run", planner, lambda w: ["report", str(w.empty)], 1,
         "Error: no run {tmp}/empty: no progress.json in {tmp}/empty or {tmp}/empty/checkpoints"),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_with_its_message_and_nothing_is_lost(case, base, tmp_path):
    w = fresh_work(base, tmp_path)
    action = case.run(w)
    expected = case.message.format(**w.fields()) if case.message else None
    if case.cli is None:
        with pytest.raises(ValueError) as err:
            action()
        assert str(err.value) == expected
    else:
        result = CliRunner().invoke(case.cli, action)
        assert result.exit_code == case.exit_code, result.output
        if expected is not None:
            assert result.output.strip().splitlines()[-1] == expected
        if case.exit_code == 1:
            assert len(result.output.strip().splitlines()) == 1, result.output
    if case.lost is not None:
        assert case.lost(w)
    decided = w.tmp / "decide" / "decisions.csv"
    if decided.is_file():  # every stock row is either decided or rejected with its reason
        rejected = w.tmp / "decide" / "rejected.csv"
        n_rejected = len(pd.read_csv(rejected)) if rejected.is_file() else 0
        assert len(pd.read_csv(decided)) + n_rejected == len(w.stock.read_text().splitlines()) - 1


def test_the_table_covers_at_least_thirty_bad_inputs():
    assert len({c.name for c in CASES}) == len(CASES) >= 30
