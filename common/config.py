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

    [network]
    share = true                    # false: never send this site's totals to a network forecast

    [training]
    device = "cpu"                  # "cuda" or "cuda:N": train this site's updates on its GPU

Unknown sections and keys are refused by name, so a misspelt ``[network]`` cannot leave a site
sharing what it meant to keep.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

DATE_ORDERS = ("day-first", "month-first")
MAX_OBSERVED = 4  # past-only covariate slots of the model
SECTION_KEYS = {  # node.toml's sections besides [data], and the keys each may hold
    "node": ("name", "secret_context", "key_fingerprint"),
    "network": ("share",),
    "training": ("device",),
}
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

    @property
    def private_dir(self) -> Path:
        """Everything derived from raw data lives here and never leaves the node."""
        return self.folder / "private"

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"


def _frequency(value: str) -> str:
    if value in ("D", "W"):
        return value
    if value.startswith("W-"):
        try:
            pd.Period("2020-01-01", freq=value)
        except ValueError:
            raise ConfigError(f"unknown weekly anchor in frequency {value!r}") from None
        return value
    raise ConfigError(f"frequency must be 'D', 'W' or 'W-<DAY>', got {value!r}")


def _str_list(section: dict, key: str) -> tuple[str, ...]:
    value = section.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[data] {key} must be a list of column names")
    return tuple(value)


def _optional_path(folder: Path, value: object) -> Path | None:
    return (folder / str(value)) if value else None


def parse_data_config(section: dict, folder: Path) -> DataConfig:
    for key in ("path", "timestamp", "quantity", "series_keys"):
        if not section.get(key):
            raise ConfigError(f"[data] is missing the required key {key!r}")
    kind = section.get("kind", "orders")
    if kind not in ("orders", "periods"):
        raise ConfigError(f"[data] kind must be 'orders' or 'periods', got {kind!r}")
    known = {
        "path",
        "kind",
        "frequency",
        "timestamp",
        "quantity",
        "series_keys",
        "price",
        "promo",
        "holiday",
        "static",
        "observed",
        "drop_columns",
        "calendar",
        "future",
        "cap_outliers",
        "date_order",
    }
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"[data] has unknown keys: {', '.join(unknown)}")
    cap = section.get("cap_outliers", True)
    if not isinstance(cap, bool):
        raise ConfigError(f"[data] cap_outliers must be true or false, got {cap!r}")
    date_order = section.get("date_order")
    if date_order is not None and date_order not in DATE_ORDERS:
        raise ConfigError(f"[data] date_order must be 'day-first' or 'month-first', got {date_order!r}")
    if len(_str_list(section, "observed")) > MAX_OBSERVED:
        raise ConfigError(f"[data] observed lists more than {MAX_OBSERVED} columns")
    return DataConfig(
        path=folder / section["path"],
        kind=kind,
        frequency=_frequency(str(section.get("frequency", "D"))),
        timestamp=section["timestamp"],
        quantity=section["quantity"],
        series_keys=_str_list(section, "series_keys"),
        price=section.get("price") or None,
        promo=section.get("promo") or None,
        holiday=section.get("holiday") or None,
        static=_str_list(section, "static"),
        observed=_str_list(section, "observed"),
        drop_columns=_str_list(section, "drop_columns"),
        calendar=_optional_path(folder, section.get("calendar")),
        future=_optional_path(folder, section.get("future")),
        cap_outliers=cap,
        date_order=date_order,
    )


def load_node_config(path: str | Path) -> NodeConfig:
    """Read node.toml (or the node.toml inside a folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "node.toml"
    if not p.is_file():
        raise ConfigError(f"node config not found: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    folder = p.parent.resolve()
    if "data" not in raw:
        raise ConfigError(f"{p} has no [data] section")
    unknown = sorted(set(raw) - {"data", *SECTION_KEYS})
    if unknown:
        known = ", ".join(["node", "data", *list(SECTION_KEYS)[1:]])
        raise ConfigError(f"{p} has unknown sections: {', '.join(unknown)} (known: {known})")
    node, network, training = (_section(raw, name) for name in SECTION_KEYS)
    share = network.get("share", True)
    if not isinstance(share, bool):
        raise ConfigError(f"[network] share must be true or false, got {share!r}")
    device = training.get("device", "cpu")
    if not isinstance(device, str) or not DEVICE_NAME.fullmatch(device):
        raise ConfigError(f"[training] device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return NodeConfig(
        name=str(node.get("name", folder.name)),
        folder=folder,
        data=parse_data_config(raw["data"], folder),
        secret_context=folder / node.get("secret_context", "keys/secret.ctx"),
        key_fingerprint=node.get("key_fingerprint") or None,
        share_network=share,
        training_device=device,
    )


def _section(raw: dict, name: str) -> dict:
    """One optional section of node.toml, refusing keys it does not know."""
    section = raw.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{name} must be a [{name}] section, got {section!r}")
    unknown = sorted(set(section) - set(SECTION_KEYS[name]))
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys: {', '.join(unknown)}")
    return section


def with_site_files(
    cfg: NodeConfig, data: str | Path | None = None, secret_context: str | Path | None = None
) -> NodeConfig:
    """The same node with its raw data file and/or secret context given on the command line."""
    if data:
        cfg = replace(cfg, data=replace(cfg.data, path=Path(data).resolve()))
    if secret_context:
        cfg = replace(cfg, secret_context=Path(secret_context).resolve())
    return cfg
