"""fedstock-planner report from a run's progress.json alone: the rounds, who answered, refused
updates, the stopping reason and the privacy budget; bad inputs named in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from common import crypto
from coordinator.planner.cli import cli

NODES = [101, 202, 303]


def _progress(run: Path, privacy: bool = False) -> None:
    run.mkdir(parents=True)
    history = []
    for r in (1, 2, 3):
        refused = ["node 303: update under another key (fingerprint 0bad)"] if r == 2 else []
        trained = NODES if r != 2 else NODES[:2]
        metrics = {
            "train_pinball": 0.5 / r,
            "holdout_mae": 10.0 - r,
            "naive_mae": 10.0,
            "holdout_pinball": 0.4 / r,
            "coverage_80": 0.7 + r / 50,
            "nodes": 3.0,
        }
        history += [
            {"round": r, "phase": "train", "replies": len(trained), "refused": refused, "nodes": trained},
            {"round": r, "phase": "evaluate", "replies": 3, "refused": [], "nodes": NODES},
            {"round": r, "phase": "publish", "replies": 3, "refused": [], "metrics": metrics},
            {"round": r, "phase": "decide", "decision": "stop" if r == 3 else "continue", "refused": []},
        ]
    body = {
        "fingerprint": "f" * 32,
        "last_round": 3,
        "planned_rounds": 10,
        "history": history,
        "outcome": {"best_round": 3, "reason": "no improvement: 2 rounds without a better summed score"},
    }
    if privacy:
        body["privacy"] = {
            "epsilon": 4.25,
            "delta": 1e-5,
            "rounds": 3,
            "noise_multiplier": 1.1,
            "clip": 1.0,
            "nodes": 3,
            "accountant": "dp_accounting RDP",
        }
    (run / "progress.json").write_text(json.dumps(body))


@pytest.fixture
def runs(tmp_path, published_keys, monkeypatch) -> Path:
    fingerprint = crypto.load_public(published_keys).fingerprint
    _progress(tmp_path / "runs" / "42", privacy=True)
    progress = tmp_path / "runs" / "42" / "progress.json"
    progress.write_text(progress.read_text().replace("f" * 32, fingerprint))
    monkeypatch.setenv("FEDSTOCK_KEYS", str(published_keys))
    monkeypatch.setenv("FEDSTOCK_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_the_report_shows_rounds_answers_refusals_stopping_and_privacy(runs):
    result = CliRunner().invoke(cli, ["report", "42"])
    assert result.exit_code == 0, result.output
    page = (runs / "42" / "report.html").read_text()
    assert "no improvement: 2 rounds without a better summed score" in page
    assert "node 303: update under another key" in page  # the refused update and its reason
    who = page[page.index("id='sites'") : page.index("id='network'")]
    assert re.search(r"node 303</td><td>trained, validated</td><td>validated</td>", who)
    assert "ε = 4.25" in page and "noise multiplier 1.1" in page
    assert "No network forecast" in page and "No distribution center decisions" in page
    assert page.count('src="data:image/png;base64,') == 1  # the round curves; nothing linked outside
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)


def test_the_latest_run_is_reported_without_an_id_and_a_demo_folder_by_its_path(runs, tmp_path):
    assert CliRunner().invoke(cli, ["report"]).exit_code == 0
    assert (runs / "42" / "report.html").is_file()
    demo = tmp_path / "demo"
    demo.mkdir()
    (runs / "42").rename(demo / "checkpoints")  # a demo's folder: its run is in checkpoints/
    result = CliRunner().invoke(cli, ["report", str(demo), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "fedstock run demo" in (tmp_path / "r.html").read_text()


def test_an_unknown_run_a_run_under_another_key_and_a_bad_dc_file_are_named_in_one_line(runs, tmp_path):
    result = CliRunner().invoke(cli, ["report", "7"])
    assert (
        result.exit_code == 1
        and result.output.strip() == f"Error: no run 7: no progress.json in {runs.resolve() / '7'}"
    )
    _progress(runs / "8")
    result = CliRunner().invoke(cli, ["report", "8"])
    assert result.exit_code == 1 and "was made under key ffff" in result.output
    assert len(result.output.strip().splitlines()) == 1
    dc = tmp_path / "dc"
    dc.mkdir()
    (dc / "decisions.csv").write_text("sku,state\ntotal,OBSERVE\n")
    result = CliRunner().invoke(cli, ["report", "42", "--dc", str(dc)])
    assert result.exit_code == 1
    assert "decisions.csv is missing columns: status, order_qty" in result.output
