"""Cross-site denoising of last season (common/denoise.py): the maths, and the encrypted protocol."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_config

from common import crypto
from common.codec import CONFIG
from common.denoise import PROFILE_FILE, DenoiseError, DenoiseSettings, Profile, SiteHistory, grid_dates
from common.settings import Settings, SettingsError
from coordinator.aggregation import RoundFailed
from coordinator.checkpoints import PROFILE_FILE as SUMMED_FILE
from coordinator.checkpoints import PROFILE_META
from coordinator.planner.inprocess import run_inprocess
from coordinator.server_app import app as server_app
from tests.conftest import node_round
from warehouse_node.client_app import app as client_app

GRID = grid_dates(pd.Timestamp("2012-04-27"), 30, "W-FRI")
SETTINGS = DenoiseSettings(rank=2, shrink=1.0, periods=30, min_sites=3, group_by="Dept", groups=("1", "2"))


def site_panel(values: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = [pd.DataFrame({"series": name, "date": GRID, "demand": y}) for name, y in values.items()]
    return pd.concat(rows, ignore_index=True)


def history(panel: pd.DataFrame, labels: dict[str, str], s: DenoiseSettings = SETTINGS) -> SiteHistory:
    scale = panel.groupby("series")["demand"].mean()
    return SiteHistory.of(panel, scale, pd.Series(labels), s, GRID)


def sites_with_a_shared_shape(n: int, noise: float, seed: int = 0) -> tuple[list[pd.DataFrame], np.ndarray]:
    """n sites whose department 1 follows one yearly shape at its own level, plus own noise."""
    rng = np.random.default_rng(seed)
    shape = 1.0 + 0.5 * np.sin(np.arange(len(GRID)) / 3.0)
    panels = []
    for _ in range(n):
        level = rng.uniform(50, 500)
        panels.append(site_panel({"a": level * (shape + noise * rng.standard_normal(len(GRID)))}))
    return panels, shape


def summed(histories: list[SiteHistory], s: DenoiseSettings = SETTINGS) -> np.ndarray:
    counts = sum(h.site_groups(len(s.groups)) for h in histories)
    return sum(h.moments(s, counts) for h in histories)


def test_summed_moments_give_the_shapes_of_the_pooled_data():
    rng = np.random.default_rng(1)
    panels = [site_panel({"a": rng.gamma(2.0, 50.0, len(GRID))}) for _ in range(4)]
    histories = [history(p, {"a": "1"}) for p in panels]
    profile = Profile.from_moments(summed(histories), SETTINGS, GRID[-1], "W-FRI", "test")
    pooled = np.vstack([h.z for h in histories])  # what one party holding every site would use
    top = np.linalg.svd(pooled, full_matrices=False)[2][: SETTINGS.rank].T
    basis = profile.basis[0]
    np.testing.assert_allclose(basis @ basis.T, top @ top.T, atol=1e-9)
    assert profile.sites.tolist() == [4, 0]


def test_other_sites_remove_noise_that_a_site_cannot_remove_alone():
    panels, shape = sites_with_a_shared_shape(8, noise=0.3)
    s = DenoiseSettings(**{**SETTINGS.__dict__, "rank": 1})
    histories = [history(p, {"a": "1"}, s) for p in panels]
    profile = Profile.from_moments(summed(histories, s), s, GRID[-1], "W-FRI", "test")
    panel = panels[0]
    level = panel["demand"].mean() / shape.mean()
    raw_error = np.abs(panel["demand"].to_numpy() - level * shape).mean()
    denoised = profile.apply(panel, pd.Series({"a": "1"}))
    assert np.abs(denoised - level * shape).mean() < 0.5 * raw_error


def test_a_group_fewer_sites_hold_is_not_shared_and_keeps_its_history():
    rng = np.random.default_rng(2)
    panels = [site_panel({"a": rng.gamma(2, 50, len(GRID)), "b": rng.gamma(2, 50, len(GRID))})]
    panels += [site_panel({"a": rng.gamma(2, 50, len(GRID))}) for _ in range(3)]
    labels = {"a": "1", "b": "2"}
    histories = [history(p, labels) for p in panels]
    counts = sum(h.site_groups(2) for h in histories)
    assert counts.tolist() == [4, 1]
    moments = histories[0].moments(SETTINGS, counts).reshape(2, -1)
    assert moments[1].max() == 0.0  # department 2 is held by one site: nothing of it is sent
    profile = Profile.from_moments(summed(histories), SETTINGS, GRID[-1], "W-FRI", "test")
    out = profile.apply(panels[0], pd.Series(labels))
    b = (panels[0]["series"] == "b").to_numpy()
    np.testing.assert_array_equal(out[b], panels[0]["demand"].to_numpy()[b])
    assert not np.allclose(out[~b], panels[0]["demand"].to_numpy()[~b])


def test_a_sum_over_fewer_sites_than_the_minimum_is_refused():
    rng = np.random.default_rng(3)
    histories = [history(site_panel({"a": rng.gamma(2, 50, len(GRID))}), {"a": "1"}) for _ in range(2)]
    forged = sum(h.moments(SETTINGS, np.array([3.0, 0.0])) for h in histories)  # the counts lied
    with pytest.raises(DenoiseError, match="summed over 2 sites, fewer than the minimum of 3"):
        Profile.from_moments(forged, SETTINGS, GRID[-1], "W-FRI", "test")


def test_a_series_without_a_mean_does_not_spoil_its_groups_shapes():
    rng = np.random.default_rng(6)
    returns_only = np.tile([40.0, -40.0, 0.0], len(GRID) // 3)  # sales and returns cancel out
    panels = [site_panel({"a": rng.gamma(2, 50, len(GRID))}) for _ in range(3)]
    panels.append(site_panel({"a": returns_only}))
    moments = summed([history(p, {"a": "1"}) for p in panels])
    assert np.isfinite(moments).all()
    assert np.isfinite(Profile.from_moments(moments, SETTINGS, GRID[-1], "W-FRI", "t").basis).all()


def test_summed_moments_that_are_not_finite_are_refused_as_corrupt():
    rng = np.random.default_rng(7)
    good = summed([history(site_panel({"a": rng.gamma(2, 50, len(GRID))}), {"a": "1"}) for _ in range(3)])
    good[5] = np.nan
    with pytest.raises(DenoiseError, match="not finite: corrupt"):
        Profile.from_moments(good, SETTINGS, GRID[-1], "W-FRI", "test")


def test_denoising_is_linear_so_a_sites_own_scaling_does_not_matter():
    panels, _ = sites_with_a_shared_shape(5, noise=0.2, seed=4)
    profile = Profile.from_moments(
        summed([history(p, {"a": "1"}) for p in panels]), SETTINGS, GRID[-1], "W-FRI", "test"
    )
    panel, labels = panels[0], pd.Series({"a": "1"})
    doubled = panel.assign(demand=2 * panel["demand"])
    np.testing.assert_allclose(profile.apply(doubled, labels), 2 * profile.apply(panel, labels))


def test_unobserved_periods_stay_unobserved_and_rows_off_the_grid_are_kept():
    panels, _ = sites_with_a_shared_shape(4, noise=0.2, seed=5)
    profile = Profile.from_moments(
        summed([history(p, {"a": "1"}) for p in panels]), SETTINGS, GRID[-1], "W-FRI", "test"
    )
    panel = panels[0].copy()
    panel.loc[3, "demand"] = np.nan
    earlier = pd.DataFrame({"series": ["a"], "date": [GRID[0] - pd.Timedelta(weeks=1)], "demand": [7.0]})
    out = profile.apply(pd.concat([earlier, panel], ignore_index=True), pd.Series({"a": "1"}))
    assert out[0] == 7.0 and np.isnan(out[4]) and np.isfinite(np.delete(out, 4)).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"denoise-min-sites": 2}, "denoise-min-sites must be at least 3"),
        ({"network-group": ""}, "denoise-rank needs network-group and network-groups"),
        ({"denoise-shrink": 0.0}, "denoise-shrink must be in"),
        ({"denoise-rank": 200}, "denoise-rank must be in 1..103"),
    ],
)
def test_bad_denoise_settings_are_refused_by_name(change, message):
    cfg = {"denoise-rank": 2, "network-group": "sku", "network-groups": "SKU-0000", **change}
    with pytest.raises(SettingsError, match=message):
        Settings.defaults(**{k.replace("-", "_"): v for k, v in cfg.items()})


# ---- the protocol, through the real ServerApp and ClientApp ---------------------------------------
def denoised_run(keys, tmp_path, **extra) -> dict:
    rc = run_config(keys, tmp_path / "ckpt", rounds=1)
    skus = ",".join(f"SKU-{i:04d}" for i in range(5))
    return {
        **rc,
        "network-group": "sku",
        "network-groups": skus,
        "denoise-rank": 2,
        "denoise-periods": 60,
        "denoise-min-sites": 3,
        **extra,
    }


def test_the_profile_is_summed_encrypted_and_every_node_trains_with_the_same_one(nodes, keys, tmp_path):
    from common.config import load_node_config
    from warehouse_node.federated import site_history

    dirs, _ = nodes
    rc = denoised_run(keys, tmp_path)
    replies: list = []
    run_inprocess(server_app, client_app, dirs, rc, observer=lambda m, _b: replies.append(m))
    meta = json.loads((tmp_path / "ckpt" / PROFILE_META).read_text())
    assert meta["status"] == "summed" and meta["sites"] == 3 and len(meta["adopted"]) == 3
    steps = [m for m in replies if m.metadata.message_type.startswith("query.profile")]
    assert len(steps) == 9  # three steps, three nodes
    for m in steps:  # in plaintext: the key's fingerprint, the grid's last date, the sum's digest
        assert set(m.content.config_records[CONFIG].keys()) <= {"fingerprint", "profile-end", "denoise-id"}
        assert all(a.stype == "fedstock.ckks" for r in m.content.array_records.values() for a in r.values())
    with pytest.raises(crypto.CryptoError, match="no secret key"):  # the coordinator cannot read it
        vec = crypto.EncryptedVector.from_bytes((tmp_path / "ckpt" / SUMMED_FILE).read_bytes())
        crypto.decrypt(crypto.load_context(keys / crypto.PUBLIC_CONTEXT_FILE), vec)
    cfgs = [load_node_config(d) for d in dirs]
    profiles = [Profile.load(c.private_dir / PROFILE_FILE) for c in cfgs]
    assert {p.profile_id for p in profiles} == {meta["id"]}
    s = node_round({**rc, "round-nodes": 3})
    histories = [site_history(c, s)[0] for c in cfgs]
    plain = Profile.from_moments(summed(histories, s.denoise), s.denoise, profiles[0].end, "D", "plain")
    for group in np.flatnonzero(plain.sites):  # the same shapes as a plaintext sum, up to CKKS noise
        b, p = profiles[0].basis[group], plain.basis[group]
        np.testing.assert_allclose(b @ b.T, p @ p.T, atol=1e-5)
    assert (tmp_path / "ckpt" / "round_0001.state.ckks").is_file()


def test_a_node_refuses_to_train_with_another_runs_profile(nodes, keys, tmp_path):
    from common.config import load_node_config
    from warehouse_node.node import Node

    dirs, _ = nodes
    rc = denoised_run(keys, tmp_path)
    run_inprocess(server_app, client_app, dirs, rc)
    meta = json.loads((tmp_path / "ckpt" / PROFILE_META).read_text())
    node = Node(load_node_config(dirs[0]))
    s = node_round({**rc, "denoise-id": "0123456789abcdef", "server-round": 2})
    with pytest.raises(DenoiseError, match=f"profile is {meta['id']}, the run announces 0123456789abcdef"):
        node.train(s, None)


def test_fewer_sites_than_the_minimum_stop_the_run_before_round_one(nodes, keys, tmp_path):
    dirs, _ = nodes
    with pytest.raises(
        RoundFailed, match="cross-site profile: 3 valid site_groups replies, the minimum is 4"
    ):
        run_inprocess(server_app, client_app, dirs, denoised_run(keys, tmp_path, **{"denoise-min-sites": 4}))
    meta = json.loads((tmp_path / "ckpt" / PROFILE_META).read_text())
    assert meta["status"] == "refused" and meta["sites"] == 0
    assert not list((tmp_path / "ckpt").glob("round_*.state.ckks"))


def test_a_node_sends_no_moments_into_a_sum_of_too_few_sites(nodes, keys, tmp_path, secret_key):
    """Even when the coordinator announces enough nodes, the encrypted site count decides."""
    from common.config import load_node_config
    from warehouse_node.node import Node

    dirs, _ = nodes
    node = Node(load_node_config(dirs[0]))
    s = node_round({**denoised_run(keys, tmp_path), "round-nodes": 3})
    two_sites = crypto.decrypt(secret_key, crypto.encrypt(secret_key, np.array([2.0] * 5 + [2.0]), 16))
    with pytest.raises(DenoiseError, match="would sum 2 sites, fewer than the minimum of 3"):
        node.profile_moments(s, two_sites)


def test_denoising_with_differential_privacy_is_refused(nodes, keys, tmp_path):
    dirs, _ = nodes
    rc = denoised_run(keys, tmp_path, **{"dp-clip": 0.5, "dp-noise": 1.0})
    with pytest.raises(ValueError, match="denoise-rank with dp-clip"):
        run_inprocess(server_app, client_app, dirs, rc)
