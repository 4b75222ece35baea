"""The run's settings: one frozen, typed tree, read once from the Flower app's run config.

Every default lives in one place, the app's ``pyproject.toml`` (``[tool.flwr.app.config]``); Flower
merges it with ``flwr run --run-config`` before the ServerApp starts, and in-process runs merge it
here (``with_defaults``). Presets are run-config files over those defaults (coordinator/planner/presets).

The coordinator keeps its own keys (paths, timeouts, minimum of nodes); the federation's keys
(model, training, server step, stopping rule, privacy, network and profile) go to every node in
each message, as one flat record (``FederationSettings.record``), and every node reads them back
with ``FederationSettings.of``: nothing downstream reads a key or states a default again.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from common.denoise import DenoiseSettings
from common.network import MIN_SITES, Layout
from common.privacy import PrivacySettings
from common.server_optimizer import ServerOptimizer
from common.stopping import StopRule

# The Flower app (pyproject.toml + packages); FEDSTOCK_APP points elsewhere (a container's /src).
APP_DIR = Path(os.environ.get("FEDSTOCK_APP") or Path(__file__).resolve().parent.parent)
MAX_SERVER_LEARNING_RATE = 10.0  # far past where an averaged update overshoots
MIN_PUBLISHED_SITES = 2  # a site never opens a sum of fewer sites: one site's own numbers

COORDINATOR_KEYS: dict[str, type] = {  # what stays with the coordinator
    "min-nodes": int,
    "round-timeout": float,
    "public-context": str,
    "checkpoint-dir": str,
    "runs-dir": str,
    "resume": bool,
    "network-forecast": bool,
}
FEDERATION_KEYS: dict[str, type] = {  # what every node receives (the meaning of each: pyproject.toml)
    "num-rounds": int,
    "seed": int,
    "validation-periods": int,
    **{k: int for k in ("lookback", "horizon", "hidden", "heads")},
    "anchor": str,
    "season-blend": float,
    **{"local-epochs": int, "max-batches": int, "batch-size": int},
    **{"learning-rate": float, "proximal-mu": float, "scale-weight": float},
    "server-optimizer": str,
    **{k: float for k in ("server-learning-rate", "server-momentum", "server-beta2", "server-tau")},
    **{"stop-patience": int, "stop-min-improvement": float, "stop-metric": str},
    **{"dp-clip": float, "dp-noise": float, "dp-nodes": int, "dp-delta": float},
    **{"network-group": str, "network-groups": str, "network-min-sites": int, "publish-min-sites": int},
    **{"denoise-rank": int, "denoise-shrink": float, "denoise-periods": int, "denoise-min-sites": int},
}
RUN_KEYS = {**COORDINATOR_KEYS, **FEDERATION_KEYS}


class SettingsError(ValueError):
    """A run config that cannot be used: names the key and what it must be."""


def typed(key: str, value: object, kind: type) -> Any:
    """``value`` as ``kind``; a whole float is an int, a bool is never a number."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif not isinstance(value, bool) and not (kind is int and isinstance(value, float) and value % 1):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    raise SettingsError(f"run config {key!r} must be {kind.__name__}, got {value!r}")


def read_values(config: Mapping, keys: Mapping[str, type]) -> dict[str, Any]:
    """Every key of ``keys`` from ``config``, typed; a missing one is named."""
    missing = [k for k in keys if k not in config]
    if missing:
        raise SettingsError(
            f"run config lacks {', '.join(missing)}: the app's pyproject.toml declares every key"
        )
    return {k: typed(k, config[k], kind) for k, kind in keys.items()}


@cache
def app_defaults(app_dir: Path = APP_DIR) -> MappingProxyType:
    """``[tool.flwr.app.config]`` of the app's pyproject.toml: the one statement of every default."""
    path = Path(app_dir) / "pyproject.toml"
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))["tool"]["flwr"]["app"]["config"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(
            f"cannot read the run-config defaults from {path} ({exc}): point FEDSTOCK_APP at the "
            "fedstock app folder (the one with its pyproject.toml)"
        ) from None
    return MappingProxyType(table)


def unknown_keys(config: Mapping) -> list[str]:
    return sorted(set(config) - set(RUN_KEYS))


def with_defaults(overrides: Mapping) -> dict[str, Any]:
    """The app's defaults with ``overrides`` over them (what ``flwr run --run-config`` does)."""
    if unknown := unknown_keys(overrides):
        raise SettingsError(f"unknown run-config keys: {', '.join(unknown)}")
    return {**app_defaults(), **overrides}


def load_run_config(path: str | Path) -> dict[str, Any]:
    """A run-config TOML file (a preset, or the planner's --run-config), its keys checked."""
    p = Path(path)
    try:
        values = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"run config {p} cannot be read: {exc}") from None
    if unknown := unknown_keys(values):
        raise SettingsError(f"run config {p} has unknown keys: {', '.join(unknown)}")
    return values


ANCHORS = ("none", "level", "seasonal")
DEFAULT_QUANTILES = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class ModelConfig:
    """The demand model's shape (common/model.py): the run config's ``lookback`` .. ``season-blend``."""

    lookback: int
    horizon: int
    hidden: int
    heads: int
    anchor: str  # what the quantiles are learned around: none, level or seasonal
    season_blend: float  # share of two seasons earlier in the seasonal-lag input (common.windows)
    denoise: bool = False  # seasonal-lag input from the run's cross-site profile (common/denoise.py)
    dropout: float = 0.1
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        qs = tuple(float(q) for q in self.quantiles)
        if list(qs) != sorted(qs) or not all(0 < q < 1 for q in qs) or 0.5 not in qs:
            raise ValueError(f"quantiles must be increasing in (0, 1) and include 0.5, got {qs}")
        if not 0.0 <= self.season_blend < 1.0:
            raise ValueError(f"season blend must be in [0, 1), got {self.season_blend}")
        if self.hidden % self.heads:
            raise ValueError("hidden must be a multiple of heads")
        object.__setattr__(self, "quantiles", qs)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """A site's local training (common/training.py). ``scale_weight`` p weights each window's loss
    by (series scale)^p: p = 1 trains for error in units (what WMAE and on-hand value measure),
    p = 0 treats every series alike. ``progress`` is the part of the whole training run this call
    covers; the learning rate follows one cosine from ``learning_rate`` to a tenth of it over the
    run (across federated rounds too). ``proximal`` μ adds μ/2·‖w − w_start‖² to the loss (FedProx,
    Li et al. 2020): a site's steps stay near the round's global model, against drift to its data."""

    epochs: int
    batch_size: int
    learning_rate: float
    max_batches_per_epoch: int
    scale_weight: float
    proximal: float
    grad_clip: float = 1.0
    progress: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class FederationSettings:
    """What every node of the run trains and decides with."""

    values: MappingProxyType  # the flat, typed keys: what travels in each message
    seed: int
    validation: int | None  # periods held out and scored each round; None: one horizon; 0: none
    model: ModelConfig
    train: TrainConfig  # the run's; a round's place in the run (progress) is set by the node
    server: ServerOptimizer
    stop: StopRule
    privacy: PrivacySettings | None
    network: Layout
    network_min_sites: int
    publish_min_sites: int
    denoise: DenoiseSettings

    @classmethod
    def of(cls, config: Mapping) -> FederationSettings:
        """From a message's config record or a whole run config; refused by key when unusable."""
        v = read_values(config, FEDERATION_KEYS)
        try:
            return cls._build(v)
        except SettingsError:
            raise
        except ValueError as exc:
            raise SettingsError(f"run config: {exc}") from None

    @classmethod
    def _build(cls, v: dict[str, Any]) -> FederationSettings:
        _check_ranges(v)
        group_by, groups = v["network-group"], v["network-groups"]
        denoise = DenoiseSettings(
            v["denoise-rank"],
            v["denoise-shrink"],
            v["denoise-periods"],
            v["denoise-min-sites"],
            group_by,
            Layout.of(group_by, groups, 1).groups[1:-1],
        )
        model = ModelConfig(
            lookback=v["lookback"],
            horizon=v["horizon"],
            hidden=v["hidden"],
            heads=v["heads"],
            anchor=v["anchor"],
            denoise=denoise.enabled,
            season_blend=v["season-blend"],
        )
        train = TrainConfig(
            epochs=v["local-epochs"],
            batch_size=v["batch-size"],
            learning_rate=v["learning-rate"],
            max_batches_per_epoch=v["max-batches"],
            scale_weight=v["scale-weight"],
            proximal=v["proximal-mu"],
        )
        server = ServerOptimizer(
            v["server-optimizer"],
            v["server-learning-rate"],
            v["server-momentum"],
            v["server-beta2"],
            v["server-tau"],
        )
        stop = StopRule(v["num-rounds"], v["stop-patience"], v["stop-min-improvement"], v["stop-metric"])
        privacy = None
        if v["dp-clip"]:
            privacy = PrivacySettings(v["dp-clip"], v["dp-noise"], v["dp-nodes"], v["dp-delta"])
        held_out = v["validation-periods"]
        return cls(
            MappingProxyType(v),
            v["seed"],
            held_out if held_out >= 0 else None,
            model,
            train,
            server,
            stop,
            privacy,
            Layout.of(group_by, groups, model.horizon),
            v["network-min-sites"],
            v["publish-min-sites"],
            denoise,
        )

    @property
    def record(self) -> dict[str, Any]:
        """The flat keys every message carries (the app edge wraps them in a ConfigRecord)."""
        return dict(self.values)


def _check_ranges(v: Mapping[str, Any]) -> None:
    if not v["proximal-mu"] >= 0:  # NaN too
        raise SettingsError(f"run config 'proximal-mu' must be 0 or more, got {v['proximal-mu']!r}")
    rate = v["server-learning-rate"]
    if not 0 < rate <= MAX_SERVER_LEARNING_RATE:
        top = f"{MAX_SERVER_LEARNING_RATE:g}"
        raise SettingsError(f"run config 'server-learning-rate' must be in (0, {top}], got {rate!r}")
    if v["network-min-sites"] < MIN_SITES:
        raise SettingsError(
            f"run config 'network-min-sites' must be at least {MIN_SITES}, got {v['network-min-sites']}"
        )
    if v["stop-patience"] and v["validation-periods"] == 0:
        raise SettingsError("run config 'stop-patience' needs a held-out window: 'validation-periods' is 0")
    if v["denoise-rank"] and v["dp-clip"]:
        raise SettingsError("denoise-rank with dp-clip: the privacy accounting covers model updates only")


@dataclass(frozen=True)
class Settings:
    """A whole run's settings: the coordinator's own keys and the federation's."""

    min_nodes: int  # the round's minimum of valid replies (at least dp-nodes under privacy)
    round_timeout: float
    public_context: str
    checkpoint_dir: str
    runs_dir: str
    resume: bool
    network_forecast: bool
    federation: FederationSettings

    @classmethod
    def of(cls, run_config: Mapping) -> Settings:
        """From Flower's run config (defaults already merged); unknown or missing keys are named."""
        if unknown := unknown_keys(run_config):
            raise SettingsError(f"unknown run-config keys: {', '.join(unknown)}")
        own = read_values(run_config, COORDINATOR_KEYS)
        config = dict(run_config)
        if typed("dp-clip", config.get("dp-clip", 0.0), float) and not config.get("dp-nodes"):
            config["dp-nodes"] = own["min-nodes"]  # the noise adds up over the round's minimum
        federation = FederationSettings.of(config)
        if federation.privacy is not None:  # fewer replies would sum less noise than promised
            own["min-nodes"] = max(own["min-nodes"], federation.privacy.nodes)
        return cls(*(own[k] for k in COORDINATOR_KEYS), federation)

    @classmethod
    def defaults(cls, **overrides: Any) -> Settings:
        """The app's defaults with ``overrides`` (``key_name`` for ``key-name``) over them."""
        return cls.of(with_defaults({k.replace("_", "-"): v for k, v in overrides.items()}))

    @property
    def rounds(self) -> int:
        return self.federation.stop.max_rounds
