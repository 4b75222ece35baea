"""docker-compose.yml names what a deployment needs and mounts in each container only what its party
may hold. It is run for real, under Podman, by scripts/compose_check.sh."""

import re

import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_service_runs_the_image_the_containerfile_builds_on_the_hosts_loopback():
    services = _services()
    assert set(services) == {"superlink", "register", "supernode-0", "supernode-1", "supernode-2", "planner"}
    for svc in services.values():
        assert svc["image"] == "localhost/fedstock:latest" and svc["build"]["dockerfile"] == "Containerfile"
        assert svc["network_mode"] == "host"
    assert (ROOT / "Containerfile").is_file()
    link = " ".join(services["superlink"]["command"])
    assert "fedstock-planner superlink --certs /planner/certs --host 127.0.0.1 --port 9600" in link
    for name in ("supernode-0", "supernode-1", "supernode-2"):
        command = " ".join(services[name]["command"])
        assert command == "fedstock-node join --superlink 127.0.0.1:9600 --node /node --tls-ca /certs/ca.crt"
    planner = " ".join(services["planner"]["command"])
    assert "fedstock-planner run --superlink 127.0.0.1:9600 --tls-ca /planner/certs/ca.crt" in planner
    assert "status $$RUN_ID --follow" in planner and "network-forecast" in planner


def test_each_container_mounts_only_what_its_party_may_hold():
    services = _services()
    folders = set()
    for name in ("supernode-0", "supernode-1", "supernode-2"):
        mounts = services[name]["volumes"]
        site = [m for m in mounts if m.endswith(":/node")]
        assert len(site) == 1 and len(mounts) == 2  # its own site folder and the CA certificate
        folders.update(site)
    assert len(folders) == 3  # no site's folder in another's container
    for name in ("superlink", "register", "planner"):  # the planner's side: no secret of a site
        mounts = " ".join(services[name]["volumes"])
        assert "warehouse-" not in mounts and "secret.ctx" not in mounts and "ca.key" not in mounts
    register = " ".join(services["register"]["command"])
    assert "fedstock-planner site add /site-keys/$$n.pub" in register
    assert "./deploy/planner/site-keys:/site-keys:ro" in services["register"]["volumes"]


def test_the_header_gives_the_steps_with_each_site_making_its_own_keys_and_decisions():
    text = COMPOSE.read_text()
    for step in (
        "fedstock-node keygen",
        "fedstock-node authkey",
        "scripts/build_images.sh",
        "scripts/compose_check.sh",
        "exec supernode-0 fedstock-node replenish",
        "exec supernode-0 fedstock-node report",
    ):
        assert step in text
    assert "certs --node" not in text


_UNCHECKED = ("logs", "down", "build")  # reading logs, stopping, building: not a step to check


def _compose_steps(text: str, prefix: str) -> set[str]:
    """The compose commands a text gives after ``prefix``, continuation lines joined, in one form:
    no options that only quiet or speed a script, sites as supernode-N, no redirections."""
    steps = set()
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        if prefix not in line:
            continue
        step = line.split(prefix, 1)[1].split("#")[0].split(">")[0]
        step = re.sub(r"\s(-T|--no-build)\b", "", step)
        step = re.sub(r"supernode-(\$n|\d)", "supernode-N", step)
        step = re.sub(r"supernode-N(\s+supernode-N)+", "supernode-N", step)  # several sites at once
        step = " ".join(step.split())
        if step and not step.startswith(_UNCHECKED):
            steps.add(step)
    return steps


def test_the_documented_container_commands_are_those_the_compose_check_runs():
    script = (ROOT / "scripts" / "compose_check.sh").read_text()
    checked = _compose_steps(script, "$PC -f docker-compose.yml ")
    for doc in ("planner.md", "operator.md"):
        text = (ROOT / "docs" / doc).read_text()
        section = text[text.index("\n## With containers") :].split("\n## ", 2)[1]
        code = "\n".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S))
        documented = _compose_steps(code, "docker compose ")
        assert documented, doc
        assert documented <= checked, f"{doc}: {sorted(documented - checked)} not run by compose_check.sh"
