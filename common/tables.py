"""Reading a node's tables (CSV or Parquet) with one-line errors instead of tracebacks.

CSV cells are read as text; the callers parse them and quarantine what does not parse.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import ConfigError

_SKIPPED_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")

_MAGIC = [
    (b"PAR1", "a Parquet file"),
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook?)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook"),
    (b"\x1f\x8b", "gzip-compressed"),
]


MAX_CELL_LINES = 5  # a quoted cell over more lines than this is a quote left open, not a note


@dataclass(frozen=True)
class MalformedLine:
    """A CSV line with more fields than the header, or (``last``) lines that one quoted cell runs
    over: skipped, never guessed at, and named by line (never by content)."""

    line: int
    fields: int
    header: int
    last: int = 0  # > line: lines line..last read as one record (an unbalanced quote?)

    def __str__(self) -> str:
        if self.last:
            return f"lines {self.line}-{self.last} are one quoted cell (an unbalanced quote?)"
        return f"line {self.line} has {self.fields} fields, the header {self.header}"

    @property
    def reason(self) -> str:
        if self.last:
            return f"malformed lines: one quoted cell runs over {self.last - self.line + 1} lines"
        return f"malformed line: {self.fields} fields, the header {self.header}"

    @property
    def source(self) -> str:
        return f"lines {self.line}-{self.last}" if self.last else f"line {self.line}"


def read_table(path: Path, malformed: list[MalformedLine] | None = None) -> pd.DataFrame:
    """Read CSV (every cell as text) or Parquet, with a one-line error for anything unreadable.

    A line with more fields than the header stops the read, unless ``malformed`` is given: then
    such lines are skipped and listed there, for the caller to quarantine.
    """
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise ConfigError(f"cannot read {path}: the file is empty")
    kind = _binary_kind(path)
    parquet = path.suffix.lower() in (".parquet", ".pq")
    if kind and not (parquet and kind == "a Parquet file"):
        expected = "Parquet" if parquet else "CSV text"
        raise ConfigError(f"cannot read {path}: it is {kind}, not {expected}")
    try:
        if parquet:
            return pd.read_parquet(path)
        return _read_csv(path, malformed)
    except ConfigError:
        raise
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read {path}: not UTF-8 text (found byte 0x{exc.object[exc.start]:02x}); save it as UTF-8"
        ) from None
    except Exception as exc:
        raise ConfigError(f"cannot read {path}: {exc}".splitlines()[0]) from None


def output_table(path: Path) -> Path:
    """``path`` when its suffix names a format this project writes (``write_table``); else a
    one-line error, given before any work is done."""
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"output {path}: end its name in .parquet or .csv, which sets its format")
    return path


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV or Parquet, by the suffix of ``path`` (see ``output_table``)."""
    output_table(path).parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def _binary_kind(path: Path) -> str | None:
    """What a file that is not text is, from its first bytes; None for text."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff"))  # text; decoding says it is not UTF-8
    return "a binary file" if b"\x00" in head and not utf16 else None


def _read_csv(path: Path, malformed: list[MalformedLine] | None) -> pd.DataFrame:
    # index_col=False: a trailing comma on every row must not shift the columns by one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=True, index_col=False, on_bad_lines="warn")
        except pd.errors.ParserError as exc:
            if "EOF inside string" not in str(exc):
                raise
            raise open_quote_error(path, *_open_quote_lines(path)) from None
    _refuse_other_separator(path, frame)
    skipped = [
        MalformedLine(int(line), int(seen), int(width))
        for w in caught
        for line, width, seen in _SKIPPED_LINE.findall(str(w.message))
    ]
    if skipped:  # pandas counts records, not lines: a line break inside quotes shifts its numbers
        lines = [start for start, _, too_long in _csv_records(path) if too_long]
        if lines and len(lines) == len(skipped):
            skipped = [replace(m, line=n) for m, n in zip(skipped, lines, strict=True)]
    if any("does not match length of data" in str(w.message) for w in caught):
        raise ConfigError(f"cannot read {path}: its first data line has more fields than the header")
    frame, skipped = _without_spanning_records(path, frame, skipped)
    if skipped and malformed is None:
        raise ConfigError(f"cannot read {path}: {skipped[0]}")
    if malformed is not None:
        malformed.extend(skipped)
    # The header as written (pandas renames a repeated name to "x.1"), spaces trimmed; a blank
    # header cell keeps pandas' "Unnamed: N".
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    names = [str(raw).strip() or str(name) for raw, name in zip(header, frame.columns, strict=True)]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"cannot read {path}: column {twice[0]!r} appears more than once in the header")
    frame.columns = names
    return frame


def row_locator(path: Path, raw: pd.DataFrame) -> Callable[[np.ndarray], list[str]]:
    """Where rows of ``raw`` (as ``read_table`` read ``path``) are in the file: "line N" of a CSV
    (the header is line 1; blank lines, line breaks inside quotes and skipped lines counted), "row N"
    of a Parquet file (1 = the first). The CSV is read again only when asked, so a clean file costs
    nothing. Where the lines cannot be matched to the rows with certainty, rows are named "row N"."""

    def by_row(positions: np.ndarray) -> list[str]:
        return [f"row {p + 1}" for p in positions]

    if path.suffix.lower() in (".parquet", ".pq"):
        return by_row

    def by_line(positions: np.ndarray) -> list[str]:
        lines = _record_lines(path, raw, positions)
        return by_row(positions) if lines is None else [f"line {n}" for n in lines]

    return by_line


def _record_lines(path: Path, raw: pd.DataFrame, positions: np.ndarray) -> list[int] | None:
    """The first line of the CSV records that pandas read as rows ``positions`` of ``raw``; None
    unless the file has one record per row and each of these records holds its row's cells."""
    wanted = {int(p) for p in positions}
    found: dict[int, tuple[int, list[str]]] = {}
    count, spans = 0, []
    records = list(_csv_records(path, spans))
    spanning = {start for start, _ in spans}
    for start, record, too_long in records:
        if too_long or start in spanning:  # skipped by pandas, or taken out by read_table
            continue
        if count in wanted:
            found[count] = (start, record)
        count += 1
    if count != len(raw) or len(found) != len(wanted):
        return None
    cells = raw.iloc[list(found)].to_numpy(dtype=object)
    for (_, record), row in zip(found.values(), cells, strict=True):
        if any(pd.notna(c) and str(c) != f for c, f in zip(row, record, strict=False)):
            return None
    return [found[int(p)][0] for p in positions]


def _csv_records(
    path: Path, spans: list[tuple[int, int]] | None = None
) -> Iterator[tuple[int, list[str], bool]]:
    """(first line, cells, more cells than the header) of each record after the header; blank
    lines, which pandas skips, are left out. ``spans`` collects (first, last line) of the records
    that run over several lines."""
    csv.field_size_limit(2**31 - 1)  # pandas reads cells of any length; so must this
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            width = len(next(reader, []))
            previous = reader.line_num
            for record in reader:
                start, previous = previous + 1, reader.line_num
                if record:
                    if spans is not None and previous > start:
                        spans.append((start, previous))
                    yield start, record, len(record) > width
        except csv.Error:  # a file pandas read but Python's csv does not: lines stay unknown
            return


def _without_spanning_records(
    path: Path, frame: pd.DataFrame, skipped: list[MalformedLine]
) -> tuple[pd.DataFrame, list[MalformedLine]]:
    """Every line is a row or a malformed line: a record that runs over several lines (a quote
    left open in a free-text cell swallows the lines after it) is taken out and named by its lines,
    as is a skipped record that does. Kept rows stay in file order, so ``row_locator`` still finds
    their lines. Returns the rows and every malformed line."""
    with path.open("rb") as handle:
        if b'"' not in handle.read():
            return frame, skipped
    spans: list[tuple[int, int]] = []
    records = [(start, too_long) for start, _, too_long in _csv_records(path, spans)]
    if not spans:
        return frame, skipped
    start, last = max(spans, key=lambda span: span[1] - span[0])
    if last - start + 1 > MAX_CELL_LINES:  # not a note with a line break: a quote left open
        raise open_quote_error(path, start, last)
    rows = [start for start, too_long in records if not too_long]  # pandas' rows, in order
    if len(rows) != len(frame):  # the two readers disagree: name the first span, read nothing
        raise open_quote_error(path, *spans[0])
    ends = dict(spans)
    drop = [row for row, start in enumerate(rows) if start in ends]
    found = [MalformedLine(rows[r], 0, 0, ends[rows[r]]) for r in drop]
    kept = [replace(m, last=ends[m.line]) if m.line in ends else m for m in skipped]
    return frame.drop(index=frame.index[drop]).reset_index(drop=True), sorted(
        [*kept, *found], key=lambda m: m.line
    )


def open_quote_error(path: Path, start: int, last: int) -> ConfigError:
    return ConfigError(
        f"cannot read {path}: lines {start}-{last} are one quoted cell (an unbalanced quote?): "
        "close or remove the quote"
    )


def _open_quote_lines(path: Path) -> tuple[int, int]:
    """Where the record a reader ran off the end of the file in starts, and the file's last line."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        start = previous = reader.line_num
        try:
            for _ in reader:
                start, previous = previous + 1, reader.line_num
        except csv.Error:
            start = previous + 1
        return start, reader.line_num


def _refuse_other_separator(path: Path, frame: pd.DataFrame) -> None:
    """A ';'-, tab- or '|'-separated export reads as one column; say so instead of 'missing columns'."""
    if len(frame.columns) != 1:
        return
    header = str(frame.columns[0])
    for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if sep in header:
            fields = header.split(sep)
            shown = sep.join(fields[:3]) + ("..." if len(fields) > 3 else "")
            raise ConfigError(
                f"cannot read {path}: it is {name}-separated (header {shown!r}); save it comma-separated"
            )
