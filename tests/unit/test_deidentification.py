from dataclasses import replace

import pandas as pd
import pytest

from common.config import ConfigError, load_node_config
from common.deid import deidentify, looks_like_pii, pseudonym
from warehouse_node.pipeline import DEMAND_FILE, MAP_FILE, QUARANTINE_FILE, prepare_node


def _all_text(folder) -> str:
    parts = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".parquet", ".csv", ".json", ".toml"):
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else None
            parts.append(frame.to_csv() if frame is not None else path.read_text())
    return "\n".join(parts)


def test_no_pii_value_survives_in_prepared_data(nodes):
    dirs, canaries = nodes
    cfg = load_node_config(dirs[0])
    prepare_node(cfg)
    for name in (DEMAND_FILE, MAP_FILE, QUARANTINE_FILE):
        assert (cfg.private_dir / name).is_file()
    prepared = _all_text(cfg.private_dir)
    leaked = [v for values in canaries[0].values() for v in values if v in prepared]
    assert leaked == []
    assert sum(len(v) for v in canaries[0].values()) > 100  # the canaries were really in the raw file
    raw = cfg.data.path.read_text()
    assert all(v in raw for v in canaries[0]["customer_email"][:5])


def test_pseudonyms_are_stable_per_secret_and_differ_across_secrets():
    a1, a2, b = (
        pseudonym(b"secret-a" * 4, "SKU-1"),
        pseudonym(b"secret-a" * 4, "SKU-1"),
        pseudonym(b"secret-b" * 4, "SKU-1"),
    )
    assert a1 == a2
    assert a1 != b
    assert "SKU" not in a1


def test_series_keys_are_pseudonymised_in_the_panel(nodes):
    cfg = load_node_config(nodes[0][0])
    prepare_node(cfg)
    panel = pd.read_parquet(cfg.private_dir / DEMAND_FILE)
    assert "sku" not in panel.columns
    assert not panel["series"].str.contains("SKU").any()
    mapping = pd.read_parquet(cfg.private_dir / MAP_FILE)
    assert set(mapping["series"]) == set(panel["series"])


def test_pii_detected_by_value_even_with_a_harmless_column_name(nodes):
    cfg = load_node_config(nodes[0][0])
    raw = pd.DataFrame(
        {
            "order_ts": ["2024-01-01"] * 3,
            "quantity": ["1", "2", "3"],
            "sku": ["a", "b", "c"],
            "unit_price": ["1", "1", "1"],
            "promo": ["0", "0", "0"],
            "category": ["x", "y", "z"],
            "note": ["jo@example.com", "al@example.org", "bo@example.net"],
            "ref": ["+1 555 123 4567", "+44 20 7946 0958", "555-867-5309"],
        }
    )
    frame, _, report = deidentify(raw, cfg.data, b"k" * 32)
    assert "note" not in frame.columns and "ref" not in frame.columns
    assert "e-mail" in report.dropped["note"] and "phone" in report.dropped["ref"]


def test_mapping_a_personal_column_as_series_key_is_refused(nodes):
    cfg = load_node_config(nodes[0][0])
    raw = pd.DataFrame(
        {
            "order_ts": ["2024-01-01"],
            "quantity": ["1"],
            "customer_email": ["a@b.example"],
            "unit_price": ["1"],
            "promo": ["0"],
            "category": ["x"],
        }
    )
    bad = cfg.data.__class__(**{**cfg.data.__dict__, "series_keys": ("customer_email",)})
    with pytest.raises(ConfigError, match="customer_email"):
        deidentify(raw, bad, b"k" * 32)


def test_product_codes_are_not_taken_for_phone_numbers():
    """EAN/UPC/GTIN codes (13, 12, 8 digits, leading zeros kept) and plain item numbers are bare
    digits; phone numbers are written with a leading + or separators."""
    codes = {
        "ean13": ["4006381333931", "5901234123457", "4007555605335"],
        "upc": ["036000291452", "012345678905", "042100005264"],
        "ean8": ["96385074", "40170725", "12345670"],
        "item_no": ["100234567", "100234568", "100234599"],
    }
    for name, values in codes.items():
        assert looks_like_pii(name, pd.Series(values)) is None, name
    for phones in (["+1 555 123 4567", "+4915112345678"], ["555-867-5309", "(030) 1234567"]):
        assert looks_like_pii("ref", pd.Series(phones)) == "values look like phone numbers"


def test_a_column_the_operator_declares_not_personal_may_be_a_key(nodes):
    cfg = load_node_config(nodes[0][0])
    raw = pd.DataFrame(
        {
            "order_ts": ["2024-01-01"] * 2,
            "quantity": ["1", "2"],
            "client_tier": ["gold", "silver"],  # a name that reads as personal, values that are not
            "unit_price": ["1", "1"],
            "promo": ["0", "0"],
            "category": ["x", "y"],
        }
    )
    data = replace(cfg.data, series_keys=("client_tier",))
    with pytest.raises(ConfigError, match=r'list it in \[data\] not_personal = \["client_tier"\]'):
        deidentify(raw, data, b"k" * 32)
    frame, mapping, _ = deidentify(raw, replace(data, not_personal=("client_tier",)), b"k" * 32)
    assert sorted(mapping["sku"]) == ["gold", "silver"] and "client_tier" not in frame.columns
