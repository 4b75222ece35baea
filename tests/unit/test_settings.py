"""The run's settings: every default stated once (pyproject.toml), read once, refused by key."""

from __future__ import annotations

import re

import pytest

from common.settings import (
    COORDINATOR_KEYS,
    FEDERATION_KEYS,
    RUN_KEYS,
    FederationSettings,
    Settings,
    SettingsError,
    app_defaults,
    load_run_config,
    with_defaults,
)
from coordinator.planner.simulate import PRESET_DIR, PRESETS
from tests.conftest import ROOT


def test_pyproject_declares_every_setting_once_and_each_default_reads_as_its_type():
    defaults = app_defaults()
    assert set(defaults) == set(RUN_KEYS) and not set(COORDINATOR_KEYS) & set(FEDERATION_KEYS)
    s = Settings.of(defaults)
    assert s.federation.model.lookback == defaults["lookback"] and s.rounds == defaults["num-rounds"]
    assert s.federation.train.learning_rate == defaults["learning-rate"]
    assert s.federation.server.name == defaults["server-optimizer"]


def test_no_module_states_a_default_of_its_own_for_a_run_setting():
    """``cfg.get("lookback", 28)`` anywhere would be a second default that can drift from
    pyproject's: every reader goes through common/settings.py."""
    keys = "|".join(map(re.escape, RUN_KEYS))
    with_default = re.compile(rf"""\.get\(\s*["']({keys})["']\s*,""")
    found = [
        f"{path.relative_to(ROOT)}:{i}"
        for folder in ("common", "coordinator", "warehouse_node", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if with_default.search(line) and path.name != "settings.py"
    ]
    assert not found, found


def test_the_federations_record_reads_back_as_the_same_settings():
    s = Settings.defaults(lookback=26, anchor="seasonal", dp_clip=0.5, min_nodes=4)
    again = FederationSettings.of(s.federation.record)
    assert again == s.federation and again.privacy.nodes == 4  # dp-nodes: the round minimum
    assert set(s.federation.record) == set(FEDERATION_KEYS)  # the coordinator's own keys stay home


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lookback": "long"}, "run config 'lookback' must be int, got 'long'"),
        ({"num-rounds": 2.5}, "run config 'num-rounds' must be int, got 2.5"),
        ({"resume": 1}, "run config 'resume' must be bool, got 1"),
        ({"learning-rate": True}, "run config 'learning-rate' must be float, got True"),
        ({"anchor": "trend"}, "anchor must be one of none, level, seasonal"),
        ({"network-min-sites": 2}, "'network-min-sites' must be at least 3"),
        ({"stop-patience": 3, "validation-periods": 0}, "'stop-patience' needs a held-out window"),
    ],
)
def test_a_bad_setting_is_refused_by_key(overrides, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.of(with_defaults(overrides))


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(SettingsError, match="unknown run-config keys: lookbak"):
        with_defaults({"lookbak": 26})
    partial = dict(app_defaults())
    del partial["horizon"], partial["seed"]
    with pytest.raises(SettingsError, match="run config lacks seed, horizon"):
        Settings.of(partial)


def test_the_presets_are_run_config_files_over_the_defaults(tmp_path):
    assert sorted(p.stem for p in PRESET_DIR.glob("*.toml")) == sorted(PRESETS)
    groups = {"network-group": "Dept", "network-groups": "1,2,3"}  # read from the data by simulate
    for name, preset in PRESETS.items():
        s = Settings.of(with_defaults({**preset, **(groups if preset.get("denoise-rank") else {})}))
        assert s.federation.model.horizon == preset["horizon"], name
    bad = tmp_path / "bad.toml"
    bad.write_text('lookback = 26\nwarmup = "yes"\n')
    with pytest.raises(SettingsError, match=r"bad\.toml has unknown keys: warmup"):
        load_run_config(bad)
