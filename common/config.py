"""Node data configuration: how a warehouse's raw file maps onto demand series.

A node is described by ``node.toml`` in its folder; paths in it are relative to that folder::

    [node]
    name = "wh-01"
    secret_context = "keys/secret.ctx"
    key_fingerprint = "…"            # optional: refuse any other key

    [data]
    path = "raw/orders.csv"         # CSV or Parquet
    kind = "orders"                 # "orders" (order lines) or "periods" (per-period sales)
    frequency = "D"                 # "D", "W" or "W-FRI" style anchored weeks
    timestamp = "order_ts"
    quantity = "quantity"
    series_keys = ["sku"]
    price = "unit_price"            # optional
    promo = "promo"                 # optional, 0/1 or promotion intensity
    holiday = ""                    # optional holiday flag column in the data itself
    static = ["category"]           # optional static categorical columns
    observed = []                   # optional past-only numeric covariates (weather, CPI...)
    drop_columns = ["customer_name"]
    calendar = "raw/calendar.csv"   # optional: date, holiday — must cover the forecast horizon
    future = "raw/future.csv"       # optional: planned promo / price per series and date
    date_order = "day-first"        # optional: how to read 03/04/2024 ("month-first"); else
                                    # the order the unambiguous dates show, never a guess
    not_personal = ["segment"]      # optional: columns that hold no personal data although their
                                    # name or values look like it (the operator's decision)

    [network]
    share = true                    # false: never send this site's totals to a network forecast

    [training]
    device = "cpu"                  # "cuda" or "cuda:N": train this site's updates on its GPU

    [forecast]                      # the degraded mode (warehouse_node/fallback.py)
    max_model_age_days = 30         # an older global model is not trusted (0, the default: any age)
    baseline_horizon = 14           # periods the baseline forecasts while no global model says

Unknown sections and keys are refused by name, so a misspelt ``[network]`` cannot leave a site
sharing what it meant to keep.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

DATE_ORDERS = ("day-first", "month-first")
MAX_OBSERVED = 4  # past-only covariate slots of the model
FALLBACK_HORIZON = 14  # periods the fallback forecasts when no global model says how many
DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")


class ConfigError(ValueError):
    """A node configuration that cannot be used."""


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str, hint: str = "") -> None:
    """Refuse ``frame`` when it lacks any of ``columns``, naming them and the columns it does have."""
    missing = [c for c in columns if c not in frame.columns]
    if not missing:
        return
    present = [str(c) for c in frame.columns]
    shown = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
    raise ConfigError(f"{what} is missing columns: {', '.join(missing)} (its columns: {shown}){hint}")


@dataclass(frozen=True)
class DataConfig:
    path: Path
    kind: str
    frequency: str
    timestamp: str
    quantity: str
    series_keys: tuple[str, ...]
    price: str | None = None
    promo: str | None = None
    holiday: str | None = None
    static: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    calendar: Path | None = None
    future: Path | None = None
    cap_outliers: bool = True
    date_order: str | None = None  # "day-first" / "month-first" for dates such as 03/04/2024
    not_personal: tuple[str, ...] = ()  # columns the operator declares free of personal data

    @property
    def used_columns(self) -> list[str]:
        cols = [self.timestamp, self.quantity, *self.series_keys, *self.static, *self.observed]
        cols += [c for c in (self.price, self.promo, self.holiday) if c]
        return list(dict.fromkeys(cols))

    @property
    def period_freq(self) -> str:
        return "W-SUN" if self.frequency == "W" else self.frequency

    @property
    def season(self) -> int:
        """Season length used by seasonal-naive and outlier windows."""
        return 7 if self.frequency == "D" else 52


@dataclass(frozen=True)
class NodeConfig:
    name: str
    folder: Path
    data: DataConfig
    secret_context: Path
    key_fingerprint: str | None = None
    share_network: bool = True  # [network] share: false keeps this site out of network forecasts
    training_device: str = "cpu"  # [training] device; checked against the hardware when training
    max_model_age_days: float = 0.0  # [forecast]: an older global model is not trusted (0: any age)
    fallback_horizon: int = FALLBACK_HORIZON  # [forecast] baseline_horizon: while no model says

    @property
    def private_dir(self) -> Path:
        """Everything derived from raw data lives here and never leaves the node."""
        return self.folder / "private"

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"


# ---- node.toml as a schema: every key's type and allowed values, one error naming key and file ----
COLUMN, COLUMNS, FILE, BOOL = "column", "columns", "file", "bool"
DAYS, PERIODS = "days", "periods"
WHAT = {
    COLUMN: "a column name (text)",
    COLUMNS: "a list of column names (text)",
    FILE: "a path to a file (text)",
    BOOL: "true or false",
    DAYS: "a number of days, 0 or more",
    PERIODS: "a whole number of periods, 1 or more",
    str: "text",
}
SCHEMA: dict[str, dict[str, object]] = {  # section -> key -> kind, or the tuple of allowed values
    "node": {"name": str, "secret_context": FILE, "key_fingerprint": str},
    "data": {
        **{"path": FILE, "kind": ("orders", "periods"), "frequency": str, "timestamp": COLUMN},
        **{"quantity": COLUMN, "series_keys": COLUMNS, "price": COLUMN, "promo": COLUMN},
        **{"holiday": COLUMN, "static": COLUMNS, "observed": COLUMNS, "drop_columns": COLUMNS},
        **{"calendar": FILE, "future": FILE, "cap_outliers": BOOL, "date_order": DATE_ORDERS},
        "not_personal": COLUMNS,
    },
    "network": {"share": BOOL},
    "training": {"device": str},
    "forecast": {"max_model_age_days": DAYS, "baseline_horizon": PERIODS},
}
REQUIRED = {"data": ("path", "timestamp", "quantity", "series_keys")}
TOML_TYPES = {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
TOML_TYPES[dict] = "a table"


def _shown(value: object) -> str:
    """A value as node.toml wrote it, and its TOML type: ``3 (a number)``, ``true (a boolean)``."""
    kind = next((name for t, name in TOML_TYPES.items() if type(value) is t), type(value).__name__)
    if isinstance(value, dict):
        return kind
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"{text} ({kind})"


def _checked(source: str, section: str, key: str, value: object) -> object:
    """``value`` of ``[section] key`` if it is what the schema allows; else a one-line error."""
    kind = SCHEMA[section][key]
    if isinstance(kind, tuple):
        if value in kind:
            return value
        allowed = ", ".join(repr(v) for v in kind)
        raise ConfigError(f"{source}: [{section}] {key} must be one of {allowed}, got {_shown(value)}")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = {
        BOOL: isinstance(value, bool),
        DAYS: number and value >= 0 and math.isfinite(value),
        PERIODS: number and float(value).is_integer() and value >= 1,
        COLUMNS: isinstance(value, list) and all(isinstance(v, str) and v for v in value),
    }.get(kind, isinstance(value, str))
    if kind == COLUMNS and isinstance(value, str) and value:
        return [value]  # one column may be given as itself
    if not ok:
        raise ConfigError(f"{source}: [{section}] {key} must be {WHAT[kind]}, got {_shown(value)}")
    return value


def read_section(raw: dict, section: str, source: str) -> dict:
    """One section of node.toml, each key checked against the schema (unknown keys refused)."""
    values = raw.get(section, {})
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {section} must be a [{section}] table of keys, got {_shown(values)}")
    unknown = sorted(set(values) - set(SCHEMA[section]))
    if unknown:
        known = ", ".join(SCHEMA[section])
        raise ConfigError(f"{source}: [{section}] has unknown keys: {', '.join(unknown)} (known: {known})")
    for key in REQUIRED.get(section, ()):
        if values.get(key) in (None, "", []):
            raise ConfigError(f"{source}: [{section}] is missing the required key {key!r}")
    return {k: _checked(source, section, k, v) for k, v in values.items()}


def _frequency(value: str, source: str) -> str:
    if value in ("D", "W"):
        return value
    if value.startswith("W-"):
        try:
            pd.Period("2020-01-01", freq=value)
        except ValueError:
            raise ConfigError(f"{source}: [data] frequency has an unknown weekly anchor: {value!r}") from None
        return value
    raise ConfigError(f"{source}: [data] frequency must be 'D', 'W' or 'W-<DAY>', got {value!r}")


def _file(folder: Path, value: object, source: str, key: str) -> Path | None:
    """A configured file, relative to the node folder; one that names a folder is refused."""
    if not value:
        return None
    path = folder / str(value)
    if path.is_dir():
        raise ConfigError(f"{source}: {key} = {str(value)!r} names a folder ({path}), not a file")
    return path


def parse_data_config(section: dict, folder: Path, source: str = "node.toml") -> DataConfig:
    d = read_section({"data": section}, "data", source)
    if len(d.get("observed", [])) > MAX_OBSERVED:
        raise ConfigError(f"{source}: [data] observed lists more than {MAX_OBSERVED} columns")
    return DataConfig(
        path=_file(folder, d["path"], source, "[data] path"),
        kind=d.get("kind", "orders"),
        frequency=_frequency(d.get("frequency", "D"), source),
        timestamp=d["timestamp"],
        quantity=d["quantity"],
        series_keys=tuple(d["series_keys"]),
        price=d.get("price") or None,
        promo=d.get("promo") or None,
        holiday=d.get("holiday") or None,
        static=tuple(d.get("static", ())),
        observed=tuple(d.get("observed", ())),
        drop_columns=tuple(d.get("drop_columns", ())),
        calendar=_file(folder, d.get("calendar"), source, "[data] calendar"),
        future=_file(folder, d.get("future"), source, "[data] future"),
        cap_outliers=d.get("cap_outliers", True),
        date_order=d.get("date_order"),
        not_personal=tuple(d.get("not_personal", ())),
    )


def _toml(p: Path) -> dict:
    """node.toml's tables; a byte-order mark is read past, text that is not UTF-8 is refused."""
    blob = p.read_bytes()
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = blob[exc.start]
        raise ConfigError(f"{p} is not UTF-8 text (found byte 0x{bad:02x}); save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None


def load_node_config(path: str | Path) -> NodeConfig:
    """Read node.toml (or the node.toml inside a folder), every key checked against ``SCHEMA``."""
    p = Path(path)
    if p.is_dir():
        p = p / "node.toml"
    if not p.is_file():
        raise ConfigError(f"node config not found: {p}")
    raw, source = _toml(p), str(p)
    folder = p.parent.resolve()
    if "data" not in raw:
        raise ConfigError(f"{p} has no [data] section")
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{p} has unknown sections: {', '.join(unknown)} (known: {', '.join(SCHEMA)})")
    if not isinstance(raw["data"], dict):
        raise ConfigError(f"{source}: data must be a [data] table of keys, got {_shown(raw['data'])}")
    node, network, training, fc = (
        read_section(raw, name, source) for name in ("node", "network", "training", "forecast")
    )
    device = training.get("device", "cpu")
    if not DEVICE_NAME.fullmatch(device):
        raise ConfigError(f"{source}: [training] device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    secret = _file(folder, node.get("secret_context", "keys/secret.ctx"), source, "[node] secret_context")
    return NodeConfig(
        name=str(node.get("name", folder.name)),
        folder=folder,
        data=parse_data_config(raw["data"], folder, source),
        secret_context=secret,
        key_fingerprint=node.get("key_fingerprint") or None,
        share_network=network.get("share", True),
        training_device=device,
        max_model_age_days=float(fc.get("max_model_age_days", 0)),
        fallback_horizon=int(fc.get("baseline_horizon", FALLBACK_HORIZON)),
    )


def with_site_files(
    cfg: NodeConfig, data: str | Path | None = None, secret_context: str | Path | None = None
) -> NodeConfig:
    """The same node with its raw data file and/or secret context given on the command line."""
    if data:
        cfg = replace(cfg, data=replace(cfg.data, path=Path(data).resolve()))
    if secret_context:
        cfg = replace(cfg, secret_context=Path(secret_context).resolve())
    return cfg
