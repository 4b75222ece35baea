"""The accuracy benchmark's record (scripts/benchmark_accuracy.py): parts of one benchmark, split by
dataset, mode and seed across runs and sessions, add up to one table without losing a row."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from scripts import benchmark_accuracy as bench

STAMP = {"command": "c", "rounds": None, "quick": False, "commit": "abc1234", "threads": 1}


def _row(method: str, seed: int | None, mae: float, dataset: str = "store_item") -> dict:
    return {"dataset": dataset, "method": method, "seed": seed, "mae": mae, "seconds": 1.0}


@pytest.fixture
def written(monkeypatch):
    tables: list[pd.DataFrame] = []
    monkeypatch.setattr(bench, "write_markdown", tables.append)  # never the repository's BENCHMARKS.md
    return tables


def test_a_row_replaces_only_the_same_dataset_method_and_seed(tmp_path, written):
    for row in (
        _row("seasonal_naive", None, 9.0),
        _row("plain", 7, 7.5),
        _row("plain", 8, 7.4),
        _row("plain", 7, 7.2, dataset="walmart"),
        _row("plain", 7, 7.1),  # a rerun of seed 7 replaces seed 7 only
        _row("seasonal_naive", None, 9.1),
    ):
        bench._keep(tmp_path, STAMP, row)
    table = pd.read_csv(tmp_path / "accuracy.csv")
    got = {(r.dataset, r.method, None if pd.isna(r.seed) else int(r.seed)): r.mae for r in table.itertuples()}
    assert got == {
        ("store_item", "seasonal_naive", None): 9.1,
        ("store_item", "plain", 7): 7.1,
        ("store_item", "plain", 8): 7.4,
        ("walmart", "plain", 7): 7.2,
    }
    assert set(table["commit"]) == {"abc1234"} and len(written) == 6


def test_rows_at_an_origin_are_appended_and_leave_the_tables_alone(tmp_path, written):
    stamp = {**STAMP, "origin": "2017-04-05"}
    bench._keep(tmp_path, stamp, _row("plain", 7, 7.0))
    bench._keep(tmp_path, stamp, _row("plain", 7, 6.9))  # another candidate setting, same seed
    assert list(pd.read_csv(tmp_path / "origins.csv")["mae"]) == [7.0, 6.9]
    assert not (tmp_path / "accuracy.csv").exists() and not written


def test_candidate_settings_are_parsed_and_refused_without_an_origin():
    assert bench._changes(("max-batches=32", "server-optimizer=fedavgm", "stop-min-improvement=0.002")) == (
        ("max-batches", 32),
        ("server-optimizer", "fedavgm"),
        ("stop-min-improvement", 0.002),
    )
    result = CliRunner().invoke(bench.main, ["--set", "max-batches=32"])
    assert result.exit_code == 2 and "--set needs --origin" in result.output
    result = CliRunner().invoke(bench.main, ["--set", "max-batches", "--origin", "2017-04-05"])
    assert result.exit_code == 2 and "'max-batches' is not KEY=VALUE" in result.output
