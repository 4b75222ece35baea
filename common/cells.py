"""Cells as spreadsheets, ERPs and POS systems write them: read correctly, or refused by column
with an example cell and what to change.

* dates: ISO text; day/month or month/day forms read in one order for the whole column; numbers
  that are spreadsheet serial days, Unix seconds or milliseconds (told apart by size); UTC offsets
  that change at daylight-saving time (each read as its local wall-clock time: the site's day);
* numbers: decimal points, or decimal commas (12,5 and 1.234,5), or comma thousands separators
  (1,234.5), one convention per column; a column whose cells read either way is refused; values
  beyond ``MAX_VALUE`` and infinities are not numbers.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from common.config import ConfigError

MAX_VALUE = 1e12  # a sales, price or stock figure beyond this is a typo (and sums of it overflow)
_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"
_DECIMAL_COMMA = r"[+-]?\d{1,3}(?:\.\d{3})+,\d+|[+-]?\d+,\d+"
_THOUSANDS_COMMA = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?"
_EITHER = r"[+-]?\d{1,3}(?:,\d{3})+"  # 1,234: a thousands separator, or three decimals after a comma
# (unit, the range of plausible sales dates 1990..2100 in that unit)
_NUMERIC_EPOCHS = {
    "spreadsheet serial days": (32874, 73051),
    "Unix seconds": (631152000, 4102444800),
    "Unix milliseconds": (631152000000, 4102444800000),
}


_NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})([/.-])(\d{1,2})\2(\d{2}|\d{4})(?!\d)")


def parse_dates(values: pd.Series, what: str, order: str | None = None) -> pd.Series:
    """Dates from text; what cannot be read becomes NaT for the caller to count.

    Numeric day and month forms (03/04/2024, 3.4.24, 03-04-2024) are read in one order for the
    whole column: ``order`` ("day-first" / "month-first"), else the order its unambiguous values
    show. A column that shows both orders, or only values that read either way, is refused, never
    guessed; a value that contradicts the order becomes NaT. A column of bare numbers is read as
    spreadsheet days or Unix time by its size (``numeric_dates``)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    if pd.api.types.is_numeric_dtype(values) or _mostly_numbers(values):
        return numeric_dates(pd.to_numeric(values, errors="coerce"), what, values)
    text = values.astype("string").str.strip()
    offsets = text.str.extract(f"({_OFFSET})")[0]
    if offsets.nunique() > 1:  # the offset changes at daylight-saving time: keep the local clock time
        text = text.str.replace(_OFFSET, "", regex=True)
        values = text
    parts = text.str.extract(_NUMERIC_DATE)
    numeric = parts[0].notna()
    out = pd.to_datetime(values.where(~numeric), errors="coerce", format="mixed")
    if not numeric.any():
        return out
    first, second = parts[0].astype(float), parts[2].astype(float)
    day_first = text[numeric & (first > 12) & (second <= 12)]
    month_first = text[numeric & (second > 12) & (first <= 12)]
    if order is None:
        if len(day_first) and len(month_first):
            raise ConfigError(
                f"{what} mixes day/month and month/day dates ({day_first.iloc[0]!r}, "
                f"{month_first.iloc[0]!r}): write one form, best ISO such as 2024-01-31"
            )
        either = text[numeric & (first <= 12) & (second <= 12)]
        if not len(day_first) and not len(month_first) and len(either):
            raise ConfigError(
                f"{what} has dates such as {either.iloc[0]!r} that read as day/month or "
                'month/day: set date_order = "day-first" or "month-first" in [data]'
            )
        order = "day-first" if len(day_first) else "month-first"
    dayfirst = order == "day-first"
    fits = numeric & ((second <= 12) if dayfirst else (first <= 12))
    out[fits] = pd.to_datetime(values[fits], errors="coerce", format="mixed", dayfirst=dayfirst)
    return out


def parse_all_dates(values: pd.Series, what: str, order: str | None = None) -> pd.Series:
    """parse_dates for a small file of settings (calendar, plan): one unreadable date refuses it."""
    dates = parse_dates(values, what, order)
    _refuse_any(dates.isna(), values, what, "unreadable dates")
    return dates


FLAG_WORDS = {"true": "1", "false": "0", "yes": "1", "no": "0"}  # what flag columns may say


def numbers_or_empty(values: pd.Series, what: str, words: dict[str, str] | None = None) -> pd.Series:
    """Numbers from a small settings file; empty cells stay NaN, ``words`` (FLAG_WORDS) are read
    as their numbers, any other text refuses the file."""
    text = values.astype("string").str.strip()
    readable = text.str.lower().replace(words) if words else text
    numbers = pd.to_numeric(readable.where(text != ""), errors="coerce").astype(float)
    _refuse_any(numbers.isna() & text.notna() & (text != ""), text, what, "values that are not numbers")
    return numbers


def _refuse_any(bad: pd.Series, values: pd.Series, what: str, kind: str) -> None:
    flags = bad.to_numpy(dtype=bool)
    if flags.any():
        first = int(flags.argmax())  # file line: the header is line 1
        raise ConfigError(
            f"{what}: {int(flags.sum())} {kind}, the first {values.iloc[first]!r} on line {first + 2}"
        )


def _mostly_numbers(values: pd.Series) -> bool:
    text = values.dropna().astype("string").str.strip()
    return len(text) > 0 and bool(text.str.fullmatch(r"\d+(?:\.\d+)?").mean() > 0.5)


def numeric_dates(numbers: pd.Series, what: str, cells: pd.Series) -> pd.Series:
    """Numbers that are dates: spreadsheet serial days (1900 system), Unix seconds or
    milliseconds, told apart by their size; a value out of the unit's range becomes NaT. Numbers
    of no such size are refused."""
    middle = float(numbers.median()) if numbers.notna().any() else float("nan")
    for unit, (low, high) in _NUMERIC_EPOCHS.items():
        if low <= middle <= high:
            inside = numbers.where((numbers >= low) & (numbers <= high))
            if unit == "spreadsheet serial days":
                return pd.Timestamp("1899-12-30") + pd.to_timedelta(inside, unit="D")
            return pd.to_datetime(inside, unit="s" if unit == "Unix seconds" else "ms")
    example = cells.dropna().iloc[0] if cells.notna().any() else "NaN"
    shown = repr(example) if isinstance(example, str) else f"{example}"
    raise ConfigError(
        f"{what} holds numbers (e.g. {shown}) that are neither spreadsheet days nor Unix seconds or "
        "milliseconds: store dates, or ISO text such as 2024-01-31"
    )


def parse_numbers(values: pd.Series, what: str) -> pd.Series:
    """Numbers as written: one decimal convention per column (see the module docstring); what is
    not a finite number within ``MAX_VALUE`` becomes NaN for the caller to count."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype(float)
    else:
        text = values.astype("string").str.strip()
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        numbers = pd.Series(numbers, index=values.index)
        rest = text[numbers.isna() & text.notna() & (text != "")]
        if len(rest):
            numbers = numbers.fillna(_separated(rest, what).astype(float))
    return numbers.where(np.isfinite(numbers) & (numbers.abs() <= MAX_VALUE))


def _separated(text: pd.Series, what: str) -> pd.Series:
    """Cells written with a decimal comma or a thousands separator, read by the column's one
    convention; the others NaN."""
    either = text.str.fullmatch(_EITHER)
    comma = text.str.fullmatch(_DECIMAL_COMMA) & ~either
    thousands = text.str.fullmatch(_THOUSANDS_COMMA) & ~either
    if comma.any() and thousands.any():
        raise ConfigError(
            f"{what} mixes decimal commas ({text[comma].iloc[0]!r}) and thousands commas "
            f"({text[thousands].iloc[0]!r}): write numbers one way, best 1234.5"
        )
    if comma.any():
        read = text.str.fullmatch(_DECIMAL_COMMA)
        return pd.to_numeric(text[read].str.replace(".", "").str.replace(",", "."), errors="coerce")
    if thousands.any():
        read = text.str.fullmatch(_THOUSANDS_COMMA)
        return pd.to_numeric(text[read].str.replace(",", ""), errors="coerce")
    if either.any():
        cell = text[either].iloc[0]
        raise ConfigError(
            f"{what} has {cell!r}, which reads as {cell.replace(',', '')} (a thousands comma) or "
            f"{cell.replace(',', '.')} (a decimal comma): write it without a thousands separator"
        )
    return pd.Series(np.nan, index=text.index)


def refuse_nested(values: pd.Series, column: str) -> None:
    """A Parquet column of lists or structs holds no one value per row: refused by name."""
    if values.dtype != object:
        return
    nested = values.map(lambda v: isinstance(v, list | tuple | dict | np.ndarray))
    if nested.any():
        kind = type(values[nested].iloc[0]).__name__
        raise ConfigError(
            f"column {column!r} holds {kind} cells (a Parquet list or struct), not one value per row: "
            "export one value per row"
        )


def row_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numbers of a file read row by row (stock, overrides), each cell by the form it has: a
    decimal point, a decimal comma (12,5 or 1.234,5) or thousands commas (1,234.5). Returns the
    numbers (NaN where none) and the cells that read either way (1,234), for the caller to reject."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(float), pd.Series(False, index=values.index)
    text = values.astype("string").str.strip()
    numbers = pd.Series(
        pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan), values.index
    )
    either = text.str.fullmatch(_EITHER).fillna(False).astype(bool)
    comma = text.str.fullmatch(_DECIMAL_COMMA).fillna(False).astype(bool) & ~either & numbers.isna()
    thousands = text.str.fullmatch(_THOUSANDS_COMMA).fillna(False).astype(bool) & ~either & numbers.isna()
    numbers[comma] = pd.to_numeric(text[comma].str.replace(".", "").str.replace(",", "."), errors="coerce")
    numbers[thousands] = pd.to_numeric(text[thousands].str.replace(",", ""), errors="coerce")
    return numbers, either
