"""De-identification: the first thing that touches raw rows.

Rules, in order:
1. Columns in the configured ``drop_columns`` are dropped.
2. Columns that look like personal data — by name (name, email, phone, address, …) or by value
   (e-mail addresses, or phone numbers: digits written with a leading + or separators) — are
   dropped. Bare digit strings are product codes (EAN/UPC/GTIN, item numbers), not phone numbers.
   If such a column is needed as a series key or static attribute, the configuration is refused
   instead: a person must decide, and may list it in ``[data] not_personal``.
3. Every column the pipeline does not use is dropped (data minimisation).
4. Series keys are replaced by keyed pseudonyms, HMAC-SHA256 under a node-local secret, so the same
   sku gets the same pseudonym on this node across runs and a different one on any other node.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.config import ConfigError, DataConfig, require_columns
from common.files import owner_only

_PII_NAME = re.compile(
    r"(^|_)(name|first_?name|last_?name|full_?name|email|e_?mail|mail|phone|mobile|tel|telephone|"
    r"address|street|addr|zip|zipcode|postcode|postal_?code|city|ssn|birth|dob|iban|card|"
    r"customer|client|contact|ip_?address)($|_)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"^\+?[\d\s().-]{7,}$")
_PHONE_MARK = re.compile(r"^\+|[\s().-]")  # how people write phone numbers; codes are bare digits
_VALUE_SAMPLE = 200

PSEUDONYM_SECRET_FILE = "pseudonym.key"


@dataclass
class DeidReport:
    dropped: dict[str, str] = field(default_factory=dict)  # column -> reason
    pseudonymized: list[str] = field(default_factory=list)


def looks_like_pii(name: str, values: pd.Series) -> str | None:
    """Return why a column looks like personal data, or None."""
    if _PII_NAME.search(name.replace(" ", "_").replace("-", "_")):
        return "column name suggests personal data"
    sample = values.dropna().astype(str).head(_VALUE_SAMPLE)
    if len(sample) == 0 or pd.api.types.is_numeric_dtype(values):
        return None
    if sample.str.fullmatch(_EMAIL.pattern).mean() > 0.5:
        return "values look like e-mail addresses"
    phone = sample.str.match(_PHONE.pattern) & sample.str.contains(_PHONE_MARK.pattern)
    if phone.mean() > 0.5 and sample.str.count(r"\d").mean() >= 7:
        return "values look like phone numbers"
    return None


def load_or_create_secret(private_dir: Path) -> bytes:
    """The node-local pseudonym key (32 random bytes, file mode 0600), created on first use."""
    path = private_dir / PSEUDONYM_SECRET_FILE
    if path.is_file():
        key = path.read_bytes()
        if len(key) < 16:
            raise ConfigError(f"{path} is too short to be a pseudonym key")
        return key
    key = secrets.token_bytes(32)
    with owner_only(private_dir):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
    return key


def seed_simulated_secret(private_dir: Path, seed: int, site: str) -> None:
    """A simulated site's pseudonym key, derived from the run's seed and the site's name, so that a
    simulation is repeatable (the series are ordered by pseudonym, and so are the batches). Never
    for a real site: its key is random (``load_or_create_secret``). An existing key is kept."""
    path = private_dir / PSEUDONYM_SECRET_FILE
    if path.is_file():
        return
    with owner_only(private_dir):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(hashlib.sha256(f"fedstock simulation {seed} {site}".encode()).digest())


def pseudonym(secret: bytes, value: str) -> str:
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:20]


def series_label(keys: pd.DataFrame) -> pd.Series:
    """One string per row identifying its series (the sku of stock files)."""
    if keys.shape[1] == 1:
        return keys.iloc[:, 0].astype(str)
    if keys.empty:  # agg over no rows gives a frame, not a Series
        return pd.Series([], index=keys.index, dtype=str)
    return keys.astype(str).agg("/".join, axis=1)


def deidentify(
    raw: pd.DataFrame, cfg: DataConfig, secret: bytes
) -> tuple[pd.DataFrame, pd.DataFrame, DeidReport]:
    """Return (minimised frame keyed by pseudonym, private sku↔pseudonym map, report)."""
    report = DeidReport()
    require_columns(raw, cfg.used_columns, "data file", "; see [data] in node.toml")
    for col in raw.columns:
        if col in cfg.drop_columns:
            report.dropped[col] = "configured direct identifier"
    needed = set(cfg.used_columns)
    for col in raw.columns:
        if col in report.dropped:
            continue
        reason = None if col in cfg.not_personal else looks_like_pii(str(col), raw[col])
        if reason and col in needed and col not in (cfg.timestamp, cfg.quantity):
            raise ConfigError(
                f"column {col!r} is used as a key or attribute but {reason}; map a non-personal column "
                f'instead, or list it in [data] not_personal = ["{col}"] if it holds no personal data'
            )
        if reason and col not in needed:
            report.dropped[col] = reason
    for col in raw.columns:
        if col not in needed and col not in report.dropped:
            report.dropped[col] = "not used (data minimisation)"
    frame = raw[cfg.used_columns].copy()
    keys = frame[list(cfg.series_keys)]
    label = series_label(keys).where(keys.notna().all(axis=1))  # missing key -> <NA>, quarantined later
    codes, uniques = pd.factorize(label, sort=True)
    pseudo = pd.array([pseudonym(secret, str(u)) for u in uniques] + [pd.NA], dtype="string")
    frame.insert(0, "series", pseudo.take(codes))  # code -1 takes the trailing <NA>
    key_map = frame.dropna(subset=["series"]).drop_duplicates("series")
    key_map = key_map[["series", *cfg.series_keys]].copy()
    key_map["sku"] = series_label(key_map[list(cfg.series_keys)]).to_numpy()
    frame = frame.drop(columns=[c for c in cfg.series_keys if c not in cfg.static])
    report.pseudonymized = list(cfg.series_keys)
    return frame, key_map.reset_index(drop=True), report
