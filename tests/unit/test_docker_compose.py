"""docker-compose.yml names what a deployment needs and mounts in each container only what its party
may hold. It is run for real, under Podman, by scripts/compose_check.sh."""

import re
from pathlib import Path

import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _services(env: dict[str, str] | None = None) -> dict:
    """The services as compose reads them: ``${VAR:-default}`` from ``env``, else its default."""
    env = env or {}
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1], m[2]), COMPOSE.read_text())
    return yaml.safe_load(text)["services"]


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
    sites = {f"supernode-{n}": Path(f"deploy/warehouse-0{n}") for n in range(3)}
    site_secrets = [folder / "keys" / "secret.ctx" for folder in sites.values()]
    secrets = [Path("deploy/planner/certs/ca.key"), *site_secrets]
    for name, svc in services.items():
        sources = [Path(m.split(":")[0]) for m in svc["volumes"]]

        def holds(target: Path, sources: list[Path] = sources) -> bool:  # the path or a folder above it
            return any(s == target or s in target.parents for s in sources)

        for site, folder in sites.items():
            assert holds(folder) == (site == name), f"{name} and {folder}"
        assert not any(holds(secret) for secret in secrets if not secret.is_relative_to(sites.get(name, "-")))
        if name in sites:
            assert len(sources) == 2  # its own site folder and the CA certificate
    register = " ".join(services["register"]["command"])
    assert "fedstock-planner site add /site-keys/$$n.pub" in register
    assert "./deploy/planner/site-keys:/site-keys:ro" in services["register"]["volumes"]


def test_a_site_on_its_own_machine_names_the_planners_address_and_its_ca():
    away = _services({"SUPERLINK": "planner.example.com:9600", "SITE_CA": "./ca.crt"})["supernode-0"]
    assert "--superlink planner.example.com:9600" in " ".join(away["command"])
    assert "./ca.crt:/certs/ca.crt:ro" in away["volumes"]


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


def _joined(text: str) -> list[str]:
    return [line for line in re.sub(r"\\\n\s*", " ", text).splitlines() if not line.lstrip().startswith("#")]


def _compose_steps(text: str, prefix: str) -> set[str]:
    """The compose commands a text gives after ``prefix``, continuation lines joined, in one form:
    no options that only quiet or speed a script, sites as supernode-N, no redirections."""
    steps = set()
    for line in _joined(text):
        if prefix not in line:
            continue
        step = line.split(prefix, 1)[1].split("#")[0].split(">")[0]
        step = re.sub(r"\s(-T|--no-build)\b", "", step)
        step = re.sub(r"supernode-(\$n|\d)", "supernode-N", step)
        step = re.sub(r"supernode-N(\s+supernode-N)+", "supernode-N", step)  # several sites at once
        step = " ".join(step.split())
        if step and not re.sub(r"^(--profile \S+ )+", "", step).startswith(_UNCHECKED):
            steps.add(step)
    return steps


def _folder_steps(text: str) -> list[str]:
    """The lines that make the deployment's folders (mkdir, fedstock-..., cp, cd), in order."""
    made = re.compile(r"^\s*(mkdir|fedstock-|cp |cd |for n in|done$)")
    return [line.strip() for line in _joined(text) if made.match(line) and "compose" not in line]


def _section(doc: str) -> str:
    text = (ROOT / "docs" / doc).read_text()
    section = text[text.index("\n## With containers") :].split("\n## ", 2)[1]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S))


def test_the_documented_container_commands_are_those_the_compose_check_runs():
    script = (ROOT / "scripts" / "compose_check.sh").read_text()
    checked = _compose_steps(script, "$PC -f docker-compose.yml ")
    documented: set[str] = set()
    for doc in ("planner.md", "operator.md"):
        mine = _compose_steps(_section(doc), "docker compose ")
        assert mine <= checked, f"{doc}: {sorted(mine - checked)} not run by compose_check.sh"
        documented |= mine
    assert documented == checked, f"run by compose_check.sh, in no doc: {sorted(checked - documented)}"
    folders = script[script.index("{  # the folders") : script.index('} > "$WORK/folders.log"')]
    assert _folder_steps(_section("planner.md"))[: len(_folder_steps(folders))] == _folder_steps(folders)
