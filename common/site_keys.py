"""A site's SuperNode authentication key pair, made at the site: the private key never leaves it.

ECDSA P-384 in OpenSSH format, as Flower's node authentication reads it; made with
``cryptography`` (already required by Flower). The private key is written 0600 from its first
byte; the site sends only the ``.pub`` file to the planner, who registers it (``site add``).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.files import write_private

SITE_KEY_FILE = "supernode.key"  # in the node's keys/ folder, beside secret.ctx


def make_node_key(folder: Path, name: str, stem: str = "supernode") -> Path:
    """Write ``folder/STEM.key`` (0600) and ``STEM.key.pub`` (commented with the site's name);
    return the public key's path. An existing private key is never replaced."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path = folder / f"{stem}.key"
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists: a site keeps its key (remove it to make a new one)")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    write_private(private_path, private)
    public_path = folder / f"{stem}.key.pub"
    public_path.write_bytes(public + f" fedstock-{name}\n".encode())
    return public_path
