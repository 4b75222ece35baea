"""Key provisioning as a deployment does it: keys are made at a site, never by the planner.

The key steward (one warehouse, ``fedstock-node keygen``) makes the CKKS key pair, hands secret.ctx
to the other sites and publishes public.ctx and keys.json, all that the coordinator and the planner
hold (THREAT_MODEL.md). The demo, the simulations and the tests provision their sites this way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common import crypto


def provision_node(node_dir: Path, keys_dir: Path, fingerprint: str) -> None:
    """Give a node the shared secret context (0600) and pin the key fingerprint in node.toml."""
    target = node_dir / "keys" / crypto.SECRET_CONTEXT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.resolve() != (keys_dir / crypto.SECRET_CONTEXT_FILE).resolve():  # the steward has it
        shutil.copyfile(keys_dir / crypto.SECRET_CONTEXT_FILE, target)
    target.chmod(0o600)
    toml = node_dir / "node.toml"
    toml.write_text(
        toml.read_text().replace(
            'secret_context = "keys/secret.ctx"',
            f'secret_context = "keys/secret.ctx"\nkey_fingerprint = "{fingerprint}"',
        )
    )


def site_keys(node_dirs: list[Path], public_dir: Path) -> str:
    """A deployment's key flow: the first site (the key steward, `fedstock-node keygen`) makes the
    key pair, hands secret.ctx to the other sites, and publishes public.ctx and keys.json, all that
    the coordinator and the planner get (``public_dir``). Returns the key's fingerprint."""
    steward = node_dirs[0] / "keys"
    fingerprint = crypto.keygen(steward)
    crypto.publish_keys(steward, public_dir)
    for node_dir in node_dirs:
        provision_node(node_dir, steward, fingerprint)
    return fingerprint
