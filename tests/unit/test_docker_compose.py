"""No Docker engine runs here: check the compose file parses and names what a deployment needs."""

import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_defines_superlink_three_supernodes_and_the_serverapp_runner():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert services["superlink"]["image"].startswith("flwr/superlink:1.41")
    supernodes = [s for s in services if s.startswith("supernode-")]
    assert len(supernodes) == 3
    mounts = set()
    for name in supernodes:
        svc = services[name]
        assert svc["image"].startswith("flwr/supernode:1.41")
        command = " ".join(svc["command"])
        assert "fedstock-node join --superlink superlink:8000 --config /node/node.toml" in command
        assert "torch==2.13.0" in command  # CPU wheel, never the CUDA default
        mounts.update(v for v in svc["volumes"] if v.endswith(":/node"))
    assert len(mounts) == 3  # each node mounts its own data folder
    planner = services["planner"]
    command = " ".join(planner["command"])
    assert "fedstock-planner $${PLANNER_ARGS:-run --superlink superlink:8000 --tls-ca" in command
    assert planner["environment"]["FEDSTOCK_APP"] == "/src"
    superlink_mounts = services["superlink"]["volumes"]
    assert "./deploy/keys/public.ctx:/app/keys/public.ctx:ro" in superlink_mounts
    assert "secret.ctx" not in " ".join(superlink_mounts)
    # the ServerApp writes RUNS/RUN_ID where the planner reads it; public.ctx at the planner's path
    assert "./deploy/runs:/app/runs" in superlink_mounts and "./deploy/runs:/app/runs" in planner["volumes"]
    assert (
        planner["environment"]["FEDSTOCK_KEYS"] == "/app/keys"
        and "./deploy/keys:/app/keys:ro" in planner["volumes"]
    )


def test_compose_transport_is_tls_with_registered_supernode_keys():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    everything = COMPOSE.read_text()
    assert "--insecure" not in everything and "insecure = true" not in everything
    link = " ".join(services["superlink"]["command"])
    assert "--ssl-certfile /certs/server.pem" in link and "--enable-supernode-auth" in link
    node_folders = set()
    for name in (s for s in services if s.startswith("supernode-")):
        command = " ".join(services[name]["command"])
        assert "--tls-ca /certs/ca.crt" in command  # join takes the site's own keys/supernode.key
        node_folders.update(v for v in services[name]["volumes"] if v.endswith(":/node"))
    assert len(node_folders) == 3  # each SuperNode its own folder, with its own key pair
    register = " ".join(services["register"]["command"])
    assert "flwr supernode register /site-keys/" in register and "root-certificates" in register
    mounted = [v for svc in services.values() for v in svc.get("volumes", [])]
    assert not any(part in v for v in mounted for part in ("ca.key", "supernode.key", "certs/nodes"))
    assert "fedstock-node authkey" in everything and "certs --node" not in everything


def test_compose_makes_the_key_pair_at_a_site_and_gives_the_planner_the_public_half():
    text = COMPOSE.read_text()
    assert "fedstock-planner keygen" not in text
    assert "fedstock-node keygen --out deploy/nodes/warehouse-00/keys --publish deploy/keys" in text
    services = yaml.safe_load(text)["services"]
    for name in ("superlink", "planner", "register"):  # the planner's site mounts no secret key
        assert "secret.ctx" not in " ".join(services[name].get("volumes", []))
