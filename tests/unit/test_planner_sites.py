"""The planner's names for registered sites (coordinator/planner/control.py), against a stand-in for the
``flwr supernode`` commands; tests/deployment/test_deployment_engine.py runs them against a real SuperLink."""

import json

import pytest

from coordinator.planner import control


class FakeSuperLink:
    """Answers ``flwr supernode register / unregister / list`` as Flower 1.41 does (JSON)."""

    def __init__(self) -> None:
        self.nodes: dict[int, str] = {}  # node id -> deleted-at
        self.next_id = 1000

    def __call__(self, runs, *args: str) -> dict:
        command = args[1]
        if command == "register":
            self.next_id += 1
            self.nodes[self.next_id] = "N/A"
            return {"success": True, "node-id": self.next_id}
        if command == "unregister":
            node = int(args[2])
            if self.nodes.get(node, "gone") != "N/A":
                raise control.ControlError("flwr supernode failed: [code: 24] Node ID not found for account.")
            self.nodes[node] = "2026-12-04 21:08:33Z"
            return {"success": True}
        listed = [{"node-id": str(k), "status": "online", "deleted-at": v} for k, v in self.nodes.items()]
        return {"success": True, "nodes": listed}


@pytest.fixture
def link(monkeypatch, tmp_path):
    fake = FakeSuperLink()
    monkeypatch.setattr(control, "_flwr", fake)
    (tmp_path / ".flwr").mkdir()
    return fake


def test_a_site_is_registered_listed_and_removed_by_its_name(link, tmp_path):
    node = control.register_site(tmp_path, tmp_path / "wh-1.key.pub", "wh-1")
    assert json.loads((tmp_path / ".flwr" / control.SITES_FILE).read_text()) == {"wh-1": node}
    with pytest.raises(control.ControlError, match="registered already"):
        control.register_site(tmp_path, tmp_path / "wh-1.key.pub", "wh-1")
    assert [(s["site"], int(s["node-id"])) for s in control.list_sites(tmp_path)] == [("wh-1", node)]
    assert control.unregister_site(tmp_path, "wh-1") == node
    assert link.nodes[node] != "N/A"  # unregistered at the SuperLink
    with pytest.raises(control.ControlError, match=r"no site named wh-1 .*registered: none"):
        control.unregister_site(tmp_path, "wh-1")
    assert control.register_site(tmp_path, tmp_path / "wh-1.key.pub", "wh-1") != node  # added again


def test_a_site_the_superlink_forgot_is_listed_as_such_and_may_be_added_or_removed(link, tmp_path):
    first = control.register_site(tmp_path, tmp_path / "a.pub", "wh-1")
    control.register_site(tmp_path, tmp_path / "b.pub", "wh-2")
    link.nodes.clear()  # a SuperLink restarted without its database
    assert {s["site"]: s["status"] for s in control.list_sites(tmp_path)} == {
        "wh-1": "unknown to the SuperLink",
        "wh-2": "unknown to the SuperLink",
    }
    assert control.register_site(tmp_path, tmp_path / "a.pub", "wh-1") != first
    control.unregister_site(tmp_path, "wh-2")  # nothing to unregister: only the name goes
    assert [s["site"] for s in control.list_sites(tmp_path)] == ["wh-1"]


def test_a_damaged_sites_file_is_named(link, tmp_path):
    (tmp_path / ".flwr" / control.SITES_FILE).write_text("[1, 2")
    with pytest.raises(control.ControlError, match=r"sites\.json is damaged"):
        control.list_sites(tmp_path)


def test_site_commands_need_one_way_to_reach_the_superlink(tmp_path):
    from click.testing import CliRunner

    from coordinator.planner.cli import cli as planner

    ca = tmp_path / "ca.crt"
    ca.write_text("not used")
    runs = ["--runs", str(tmp_path / "runs")]
    cases = [
        (["list"], "no SuperLink connection"),
        (["list", "--tls-ca", str(ca)], "go with --superlink"),
        (["list", "--superlink", "h:1", "--tls-ca", str(ca), "--insecure"], "not both"),
        (["list", "--superlink", "h:1"], "not both"),
        (["remove", "wh-1", "--superlink", "nohost", "--insecure"], "must be HOST:PORT"),
    ]
    for args, said in cases:
        result = CliRunner().invoke(planner, ["site", *args, *runs])
        assert result.exit_code != 0 and said in result.output, (args, result.output)
