"""fedstock-planner report: one self-contained HTML file that renders in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from coordinator.planner.cli import cli
from coordinator.planner.report import decisions_section

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _run_dir(root: Path) -> tuple[Path, Path]:
    run = root / "run"
    (run / "nodes" / "store-01" / "out").mkdir(parents=True)
    dates = pd.date_range("2012-05-04", periods=13, freq="W-FRI")
    rows = []
    for store in (1, 2):
        for dept in (1, 2, 3):
            for i, d in enumerate(dates):
                mid = 1000.0 * store * dept + 10 * i
                q = {f"q{p:02d}": mid * (1 + (p - 50) / 200) for p in (10, 25, 50, 75, 90)}
                rows.append({"Store": store, "Dept": dept, "Date": d, "mean": mid, **q})
    fc = pd.DataFrame(rows)
    fc.to_parquet(run / "forecasts.parquet", index=False)
    actuals = fc[["Store", "Dept", "Date"]].assign(Weekly_Sales=fc["q50"] * 1.05)
    actuals.to_csv(root / "actuals.csv", index=False)
    pd.DataFrame(
        {"round": [1, 2, 3], "train_pinball": [0.5, 0.4, 0.35], "mae_vs_naive": [0.9, 0.8, 0.78]}
    ).to_csv(run / "rounds.csv", index=False)
    out = run / "nodes" / "store-01" / "out"
    pd.DataFrame({"sku": ["a", "b", "c"], "status": ["REPLENISH_NOW", "OBSERVE", "OBSERVE"]}).to_csv(
        out / "decisions.csv", index=False
    )
    pd.DataFrame({"sku": ["a", "b", "c"], "promotion": ["SUPPRESS", "PROMOTE", "NEUTRAL"]}).to_csv(
        out / "strategy.csv", index=False
    )
    curve = [
        {
            "dataset": "walmart",
            "lead": lead,
            "policy": p,
            "target": t,
            "fill_rate": t - 0.02,
            "on_hand_value": 1e6 * t,
        }
        for lead in (1, 2)
        for p in ("classical", "probabilistic")
        for t in (0.8, 0.9, 0.99)
    ]
    pd.DataFrame(curve).to_csv(run / "inventory.csv", index=False)
    return run, root / "actuals.csv"


def test_report_is_one_self_contained_html_file_with_every_section(tmp_path):
    run, actuals = _run_dir(tmp_path)
    args = ["report", str(run), "--actuals", str(actuals), "--target", "Weekly_Sales"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    for heading in (
        "Forecast fans",
        "Federated rounds",
        "Decisions and promotions",
        "Service level vs stock",
    ):
        assert f"<h2>{heading}" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3
    assert not re.search(r'(src|href)="(https?:|file:|/)', page), "the report links to outside files"
    assert "REPLENISH_NOW" in page and "PROMOTE" in page
    assert "the 4 largest by forecast volume. Actuals in 4 of them." in page  # CSV keys read as numbers


def test_a_demo_run_counts_each_decision_once_though_every_node_keeps_its_own_copy(tmp_path):
    run, _ = _run_dir(tmp_path)
    node_copy = pd.read_csv(run / "nodes" / "store-01" / "out" / "decisions.csv")
    node_copy.assign(node="store-01").to_csv(run / "decisions.csv", index=False)  # as the demo writes
    page = decisions_section(run)
    counts = dict(re.findall(r"<td>(REPLENISH_NOW|WARNING|OBSERVE)</td>\s*<td>(\d+)</td>", page))
    assert counts == {"OBSERVE": "2", "REPLENISH_NOW": "1"}
    assert "From decisions.csv." in page and "From nodes/store-01/out/strategy.csv." in page
    two_sites = pd.concat([node_copy.assign(node="store-01"), node_copy.assign(node="store-02")])
    two_sites.to_csv(run / "decisions.csv", index=False)
    page = decisions_section(run)
    assert re.search(r"<th>store-02</th>\s*<td>2</td>\s*<td>1</td>", page), "OBSERVE, REPLENISH_NOW by site"


def test_a_decisions_file_that_is_empty_or_lacks_its_column_is_named_in_one_line(tmp_path):
    run, _ = _run_dir(tmp_path)
    decisions = run / "nodes" / "store-01" / "out" / "decisions.csv"
    decisions.write_text("sku,foo\na,1\n")
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: nodes/store-01/out/decisions.csv is missing columns: status (its columns: sku, foo)"
    )
    decisions.write_text("")
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.output.strip() == f"Error: cannot read {decisions}: the file is empty"


def test_actuals_rounds_and_inventory_files_missing_what_is_plotted_are_named(tmp_path):
    run, actuals = _run_dir(tmp_path)
    pd.read_csv(actuals).drop(columns=["Dept"]).to_csv(actuals, index=False)
    args = ["report", str(run), "--actuals", str(actuals), "--target", "Weekly_Sales"]
    assert CliRunner().invoke(cli, args).output.strip() == (
        "Error: actuals file is missing columns: Dept (its columns: Store, Date, Weekly_Sales) "
        "(the forecasts' keys and date)"
    )
    pd.DataFrame({"rnd": [1]}).to_csv(run / "rounds.csv", index=False)
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.output.strip() == "Error: rounds.csv is missing columns: round (its columns: rnd)"
    (run / "rounds.csv").unlink()
    pd.DataFrame({"dataset": ["walmart"]}).to_csv(run / "inventory.csv", index=False)
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 1 and "inventory.csv is missing columns: lead, policy" in result.output


def test_report_refuses_a_folder_without_forecasts_and_a_missing_target(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "forecasts.parquet not found" in result.output
    run, actuals = _run_dir(tmp_path)
    result = runner.invoke(cli, ["report", str(run), "--actuals", str(actuals)])
    assert result.exit_code != 0 and "no target column" in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_report_renders_its_plots_in_headless_chromium(tmp_path):
    run, actuals = _run_dir(tmp_path)
    CliRunner().invoke(cli, ["report", str(run), "--actuals", str(actuals), "--target", "Weekly_Sales"])
    url = (run / "report.html").resolve().as_uri()
    profile = [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert "Service level vs stock" in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, *profile, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True,
        timeout=120,
    )
    pixels = mpimg.imread(shot)[..., :3]
    plot_blue = np.array([31, 119, 180]) / 255  # matplotlib's first line colour
    assert (np.abs(pixels - plot_blue).sum(axis=-1) < 0.08).sum() > 500, "no plot lines were painted"
