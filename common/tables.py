"""Reading a node's tables (CSV or Parquet) with one-line errors instead of tracebacks.

CSV cells are read as text; the callers parse them and quarantine what does not parse.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.config import ConfigError

_SKIPPED_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")

_MAGIC = [
    (b"PAR1", "a Parquet file"),
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook?)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook"),
    (b"\x1f\x8b", "gzip-compressed"),
]


@dataclass(frozen=True)
class MalformedLine:
    """A CSV line with more fields than the header: skipped, never guessed at."""

    line: int
    fields: int
    header: int

    def __str__(self) -> str:
        return f"line {self.line} has {self.fields} fields, the header {self.header}"


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
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, index_col=False, on_bad_lines="warn")
    _refuse_other_separator(path, frame)
    skipped = [
        MalformedLine(int(line), int(seen), int(width))
        for w in caught
        for line, width, seen in _SKIPPED_LINE.findall(str(w.message))
    ]
    if any("does not match length of data" in str(w.message) for w in caught):
        raise ConfigError(f"cannot read {path}: its first data line has more fields than the header")
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
