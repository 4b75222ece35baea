"""`fedstock-node join` and the planner's console refuse bad input before anything starts."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from common import crypto
from common.config import load_node_config
from common.site_keys import make_node_key
from coordinator.planner.certs import make_certificates
from coordinator.planner.cli import cli as planner
from tests.conftest import ROOT
from warehouse_node import join as join_module
from warehouse_node import journal
from warehouse_node.cli import cli as node
from warehouse_node.join import JoinSettings, check_site, shown, supernode_args

LINK = ["--superlink", "127.0.0.1:9"]


def _join(node_dir, *extra):
    return CliRunner().invoke(node, ["join", *LINK, "--config", str(node_dir / "node.toml"), *extra])


def _error(result) -> str:
    """The one error line (click's usage errors also print the usage above it)."""
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_join_checks_keys_data_and_transport_and_builds_the_supernode_command(nodes, tmp_path):
    node_dir = nodes[0][0]
    certs = tmp_path / "certs"
    make_certificates(certs, ["127.0.0.1"])
    key = make_node_key(tmp_path / "site-keys", "warehouse-00").with_suffix("")
    settings = JoinSettings("127.0.0.1:9092", node_dir / "node.toml", tls_ca=certs / "ca.crt", auth_key=key)
    settings, cfg, lines = check_site(settings)
    assert any("matches the federation's" in line for line in lines)
    assert any(line.startswith("TLS with CA") for line in lines)
    assert any(line.startswith("training on ") for line in lines)
    assert any("de-identified" in line for line in lines) and (cfg.private_dir / "demand.parquet").is_file()
    args = supernode_args(settings, cfg)
    assert args[args.index("--root-certificates") + 1] == str((certs / "ca.crt").resolve())
    assert args[args.index("--auth-supernode-private-key") + 1] == str(key.resolve())
    assert f"node-dir='{cfg.folder}'" in args[args.index("--node-config") + 1]
    assert "--insecure" not in args


def test_a_second_site_on_one_machine_gets_a_free_port_and_a_port_in_use_is_named(nodes):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first_site:
        first_site.bind(("127.0.0.1", 0))
        first_site.listen()
        taken = first_site.getsockname()[1]
        settings = JoinSettings("127.0.0.1:9", nodes[0][0] / "node.toml", insecure=True)
        settings, _, lines = check_site(settings)
        assert settings.port != taken and f"SuperNode port {settings.port} on 127.0.0.1 (free" in lines[-1]
        assert supernode_args(settings, load_node_config(nodes[0][0]))[-3] == str(settings.port)
        assert _error(_join(nodes[0][0], "--insecure", "--port", str(taken))) == (
            f"Error: port {taken} on 127.0.0.1 is in use (another SuperNode on this machine?): pass a free "
            "--port, or leave --port out to take one the system gives"
        )


def test_join_refuses_another_federations_key(nodes, tmp_path):
    other = tmp_path / "other"
    crypto.keygen(other)
    message = _error(_join(nodes[0][0], "--keys", str(other), "--insecure"))
    theirs = crypto.load_context(other / crypto.SECRET_CONTEXT_FILE).fingerprint
    ours = load_node_config(nodes[0][0]).key_fingerprint
    assert message == (  # both sources named: the key's file, and where the other value is written
        f"Error: the key {other / crypto.SECRET_CONTEXT_FILE} has fingerprint {theirs}, but node.toml "
        f"key_fingerprint says {ours}: the federation's fingerprint is the one in the key steward's "
        "keys.json; correct node.toml key_fingerprint or use the federation's secret.ctx"
    )


def test_join_refuses_to_run_without_tls_unless_told_insecure(nodes):
    assert "--tls-ca FILE, or --insecure" in _error(_join(nodes[0][0]))


def test_join_refuses_a_ca_that_is_not_a_certificate_and_a_readable_auth_key(nodes, tmp_path):
    bogus = tmp_path / "ca.crt"
    bogus.write_text("not a certificate")
    assert "is not a PEM certificate" in _error(_join(nodes[0][0], "--tls-ca", str(bogus)))
    certs = tmp_path / "certs"
    make_certificates(certs, ["127.0.0.1"])
    key = make_node_key(tmp_path / "site-keys", "n").with_suffix("")
    os.chmod(key, 0o644)
    args = ("--tls-ca", str(certs / "ca.crt"), "--auth-key", str(key))
    assert "readable by others" in _error(_join(nodes[0][0], *args))


def test_join_refuses_data_it_cannot_read_and_a_malformed_address(nodes, tmp_path):
    broken = tmp_path / "orders.csv"
    broken.write_text("nothing,useful\n1,2\n")
    message = _error(_join(nodes[0][0], "--data", str(broken), "--insecure"))
    assert "order_ts" in message or "column" in message
    bad = CliRunner().invoke(
        node, ["join", "--superlink", "nohost", "--config", str(nodes[0][0]), "--insecure"]
    )
    assert "HOST:PORT" in _error(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_join_refuses_a_training_gpu_this_machine_does_not_have(nodes):
    toml = nodes[0][0] / "node.toml"
    toml.write_text(toml.read_text() + '\n[training]\ndevice = "cuda:1"\n')
    message = _error(_join(nodes[0][0], "--insecure"))
    assert message.startswith("Error: node.toml: training device 'cuda:1': this machine has no CUDA GPU")
    assert not (nodes[0][0] / "private" / "demand.parquet").exists()  # refused before preparing data


def test_node_status_reports_rounds_model_and_forecast_from_the_journal(nodes):
    cfg = load_node_config(nodes[0][0])
    fresh = CliRunner().invoke(node, ["status", "--config", str(cfg.folder), "--json"])
    assert fresh.exit_code == 0 and json.loads(fresh.output)["supernode"] == "never joined"
    journal.record(cfg, "train", run=7, round=1, bytes=100)
    journal.record(cfg, "evaluate", run=7, round=1, model="abc", bytes=10)
    journal.record(cfg, "evaluate", run=7, round=2, model="def", bytes=10)
    journal.record(
        cfg,
        "forecast",
        run=7,
        round=2,
        forecast_model="abc",  # round 1's was the best: the last round's model stays "def"
        start="2024-01-01",
        end="2024-01-14",
        periods=14,
        series=5,
    )
    journal.record(cfg, "joined", superlink="127.0.0.1:9", pid=2**22 + 12345)  # no such process
    body = json.loads(CliRunner().invoke(node, ["status", "--config", str(cfg.folder), "--json"]).output)
    assert body["rounds_answered"] == 1
    assert (body["last_model"]["model"], body["last_model"]["round"]) == ("def", 2)
    assert body["last_forecast"]["start"] == "2024-01-01" and body["supernode"].startswith("gone")
    table = CliRunner().invoke(node, ["status", "--config", str(cfg.folder)])
    assert table.exit_code == 0 and "2024-01-01..2024-01-14" in table.output
    assert "def (run 7 round 2)" in table.output and "with model abc" in table.output


def test_join_shows_the_nodes_own_lines_and_flower_errors_only():
    assert shown("\x1b[92mINFO \x1b[0m: fedstock-node | run 1 round 2: update sent", False) == (
        "run 1 round 2: update sent"
    )
    assert shown("INFO :      Received: train message", False) is None
    assert shown("\x1b[91mERROR \x1b[0m:     ClientApp raised an exception", False) == (
        "ERROR :     ClientApp raised an exception"
    )


@pytest.fixture
def planner_keys(keys, tmp_path):
    """What the key steward publishes: public.ctx and keys.json, no secret.ctx."""
    folder = tmp_path / "planner-keys"
    crypto.publish_keys(keys, folder)
    return folder


def _run(planner_keys, tmp_path, *extra):
    args = ["run", *LINK, "--keys", str(planner_keys), "--runs", str(tmp_path / "runs"), *extra]
    return CliRunner().invoke(planner, args)


def test_planner_run_refuses_bad_options_before_submitting_anything(planner_keys, keys, tmp_path):
    assert "--tls-ca FILE, or --insecure" in _error(_run(planner_keys, tmp_path))
    unknown = tmp_path / "rc.toml"
    unknown.write_text("num-round = 3\n")
    message = _error(_run(planner_keys, tmp_path, "--insecure", "--run-config", str(unknown)))
    assert "unknown run-config keys: num-round" in message
    mistyped = tmp_path / "typed.toml"
    mistyped.write_text('lookback = "long"\n')
    message = _error(_run(planner_keys, tmp_path, "--insecure", "--run-config", str(mistyped)))
    assert "run config 'lookback' must be int, got 'long'" in message
    assert "HOST:PORT" in _error(
        CliRunner().invoke(
            planner,
            [
                "run",
                "--superlink",
                "host",
                "--insecure",
                "--keys",
                str(planner_keys),
                "--runs",
                str(tmp_path / "runs"),
            ],
        )
    )
    assert "--min-sites" in _error(_run(planner_keys, tmp_path, "--insecure", "--min-sites", "2"))
    no_values = _error(_run(planner_keys, tmp_path, "--insecure", "--network-group", "Dept"))
    assert "needs the list of its values" in no_values
    shutil.copyfile(keys / crypto.SECRET_CONTEXT_FILE, planner_keys / crypto.SECRET_CONTEXT_FILE)
    assert "the planner holds no secret key" in _error(_run(planner_keys, tmp_path, "--insecure"))
    (planner_keys / crypto.SECRET_CONTEXT_FILE).unlink()
    shutil.copyfile(keys / crypto.SECRET_CONTEXT_FILE, planner_keys / crypto.PUBLIC_CONTEXT_FILE)
    assert "holds a secret key" in _error(_run(planner_keys, tmp_path, "--insecure"))
    assert not (tmp_path / "runs" / ".flwr" / "run_config.toml").exists()


def test_planner_status_and_network_forecast_name_what_is_missing(planner_keys, tmp_path):
    runs = tmp_path / "runs"
    common = ["--keys", str(planner_keys), "--runs", str(runs)]
    assert "no runs in" in _error(CliRunner().invoke(planner, ["status", *common]))
    (runs / "42").mkdir(parents=True)
    result = CliRunner().invoke(
        planner, ["network-forecast", "42", *common, "--out", str(tmp_path / "n.parquet")]
    )
    assert "has no network forecast" in _error(result)


def test_status_shows_a_run_as_started_before_its_first_round_is_checkpointed(planner_keys, tmp_path):
    runs = tmp_path / "runs"
    common = ["--keys", str(planner_keys), "--runs", str(runs)]
    (runs / "77").mkdir(parents=True)  # what `run` leaves as it submits: the run's folder and this note
    note = {"run": 77, "superlink": "127.0.0.1:9", "time": 1.8e9, "rounds": 6}
    (runs / "77" / "started.json").write_text(json.dumps(note))
    shown = CliRunner().invoke(planner, ["status", *common])  # the latest run, though no round ended
    assert shown.exit_code == 0, shown.output
    assert "run 77: " in shown.output and "rounds 0 of at most 6" in shown.output
    assert "round 1 in progress" in shown.output
    body = json.loads(CliRunner().invoke(planner, ["status", "77", *common, "--json"]).output)
    assert body["started"]["superlink"] == "127.0.0.1:9" and body["rounds"] == []


STAND_IN = """
import sys
from pathlib import Path
from common.config import load_node_config
from warehouse_node import join

node_dir = Path(sys.argv[1])
sleeper = "import time; print('up', flush=True); time.sleep(120)"
join.supernode_args = lambda s, cfg: [sys.executable, "-c", sleeper]
settings = join.JoinSettings("127.0.0.1:9", node_dir / "node.toml", insecure=True, verbose=True)
sys.exit(join.run_supernode(settings, load_node_config(node_dir), lambda line: print(line, flush=True)))
"""


def test_ctrl_c_stops_the_supernode_cleanly_even_when_sigint_was_inherited_as_ignored(nodes, tmp_path):
    node_dir = nodes[0][0]
    proc = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(node_dir)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as under `cmd &` in a script
        cwd=ROOT,
    )
    try:
        assert "SuperNode started" in proc.stdout.readline()
        assert proc.stdout.readline().strip() == "up"  # the stand-in runs (shown: verbose)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "stopped cleanly" in proc.stdout.read()
    finally:
        proc.kill()
    events = journal.read_status(load_node_config(node_dir))["events"]
    assert [e["kind"] for e in events[-2:]] == ["joined", "left"]
    assert not join_module._alive(events[-2]["pid"])  # the SuperNode's process is gone too


def _join_a_fake_supernode(node_dir, monkeypatch, program: str) -> tuple[int, list[str], dict]:
    """run_supernode over a stand-in SuperNode: (join's code, what it said, the journal's last event)."""
    cfg = load_node_config(node_dir)
    monkeypatch.setattr(join_module, "supernode_args", lambda s, cfg: [sys.executable, "-c", program])
    settings = JoinSettings("127.0.0.1:9", cfg.folder / "node.toml", insecure=True)
    said: list[str] = []
    code = join_module.run_supernode(settings, cfg, said.append)
    return code, said, journal.read_status(cfg)["events"][-1]


def test_a_supernode_that_ends_by_itself_says_the_site_is_out_and_exits_non_zero(nodes, monkeypatch):
    ends = "print('SuperNode terminated gracefully.', flush=True)"  # what Flower does once unregistered
    code, said, left = _join_a_fake_supernode(nodes[0][0], monkeypatch, ends)
    assert code == join_module.EXIT_SESSION_ENDED
    assert any("fedstock-planner site remove" in line for line in said), said
    assert (left["kind"], left["exit_code"]) == ("left", join_module.EXIT_SESSION_ENDED)


def test_a_supernode_refused_by_flower_says_flowers_code_and_exits_with_joins_own(nodes, monkeypatch):
    refused = (  # what Flower does for an unregistered key: logs its code, exits 1
        "import sys; print('ERROR :     Exit Code: 305', flush=True); sys.exit(1)"
    )
    code, said, left = _join_a_fake_supernode(nodes[0][0], monkeypatch, refused)
    assert code == join_module.EXIT_SUPERNODE_FAILED
    assert any("SuperNode exited with code 1, Flower's exit code 305" in line for line in said), said
    assert (left["exit_code"], left["flower_exit_code"]) == (join_module.EXIT_SUPERNODE_FAILED, 305)


def test_a_site_makes_its_own_supernode_key_and_join_uses_it_and_the_planner_makes_none(nodes, tmp_path):
    node_dir = nodes[0][0]
    made = CliRunner().invoke(node, ["authkey", "--node", str(node_dir)])
    assert made.exit_code == 0, made.output
    private, public = node_dir / "keys" / "supernode.key", node_dir / "keys" / "supernode.key.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and public.read_text().startswith(
        "ecdsa-sha2-nistp384 "
    )
    again = CliRunner().invoke(node, ["authkey", "--node", str(node_dir)])
    assert _error(again) == f"Error: {private} exists: a site keeps its key (remove it to make a new one)"
    certs = tmp_path / "certs"
    refused = CliRunner().invoke(planner, ["certs", "--out", str(certs), "--node", "warehouse-00"])
    assert "each site runs `fedstock-node authkey`" in _error(refused) and not certs.exists()
    assert CliRunner().invoke(planner, ["certs", "--out", str(certs)]).exit_code == 0
    settings, cfg, lines = check_site(
        JoinSettings("127.0.0.1:9", node_dir / "node.toml", tls_ca=certs / "ca.crt")
    )
    assert settings.auth_key == private and any(
        line.endswith("SuperNode key supernode.key") for line in lines
    )
    args = supernode_args(settings, cfg)
    assert args[args.index("--auth-supernode-private-key") + 1] == str(private.resolve())


def test_the_planners_superlink_command_checks_certificates_and_port_before_starting(tmp_path):
    certs = tmp_path / "certs"
    missing = CliRunner().invoke(planner, ["superlink", "--certs", str(certs), "--dry-run"])
    assert (
        _error(missing)
        == f"Error: {certs / 'server.pem'} not found: make it with fedstock-planner certs --out {certs}"
    )
    make_certificates(certs, ["127.0.0.1"])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as running:
        running.bind(("127.0.0.1", 0))
        running.listen()
        port = str(running.getsockname()[1])
        taken = CliRunner().invoke(
            planner, ["superlink", "--insecure", "--host", "127.0.0.1", "--port", port]
        )
        assert "is a SuperLink running already? Choose another --port" in _error(taken)
    dry = CliRunner().invoke(planner, ["superlink", "--certs", str(certs), "--port", port, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "--ssl-certfile" in dry.output and "--enable-supernode-auth" in dry.output
    assert "--disable-runtime-dependency-installation" in dry.output
    assert "or --insecure" in _error(CliRunner().invoke(planner, ["superlink", "--dry-run"]))


def test_status_names_the_registered_sites_that_trained_in_its_table(planner_keys, tmp_path):
    runs = tmp_path / "runs"
    (runs / ".flwr").mkdir(parents=True)
    (runs / ".flwr" / "sites.json").write_text(json.dumps({"north": 101, "south": 202, "east": 303}))
    fingerprint = crypto.load_public(planner_keys).fingerprint
    history = [{"round": 1, "phase": "train", "replies": 2, "refused": [], "nodes": [101, 202]}]
    progress = {"fingerprint": fingerprint, "last_round": 1, "planned_rounds": 3, "history": history}
    (runs / "5").mkdir()
    (runs / "5" / "progress.json").write_text(json.dumps(progress))
    shown = CliRunner().invoke(planner, ["status", "5", "--keys", str(planner_keys), "--runs", str(runs)])
    assert shown.exit_code == 0, shown.output
    assert "sites that trained: round 1: north, south" in shown.output
    assert "registered sites that did not train: round 1: east" in shown.output
