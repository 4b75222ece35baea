"""Outputs that cannot be written are refused before any work, in one line."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from common.files import OutputError, check_output
from coordinator.planner.cli import cli as planner


def test_an_output_under_a_file_or_of_the_wrong_kind_is_refused(tmp_path):
    file = tmp_path / "a.csv"
    file.write_text("x")
    with pytest.raises(OutputError, match=f"output file {file}/b/c.csv cannot be made: {file} is a file"):
        check_output(file / "b" / "c.csv")
    with pytest.raises(OutputError, match=f"output folder {file} is a file"):
        check_output(file, folder=True)
    with pytest.raises(OutputError, match=f"output file {tmp_path} is a folder"):
        check_output(tmp_path)
    assert check_output(tmp_path / "new" / "deeper", folder=True) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking makes nothing


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    """(Root writes anywhere, so the permission is denied here by the check's own probe.)"""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real(p, mode))
    with pytest.raises(OutputError, match=f"cannot be written: {locked} is read-only for this user"):
        check_output(locked / "sub" / "out.parquet")


@pytest.mark.parametrize(
    "command", [["demo", "--engine", "inprocess"], ["simulate", "--dataset", "walmart", "--data", "."]]
)
def test_the_planners_harnesses_refuse_an_out_under_a_file_before_any_work(command, tmp_path):
    file = tmp_path / "taken"
    file.write_text("x")
    result = CliRunner().invoke(planner, [*command, "--out", str(file / "run")])
    assert result.exit_code == 1, result.output
    message = f"Error: output folder {file}/run cannot be made: {file} is a file, not a folder"
    assert result.output.strip().splitlines() == [message]
