"""CKKS encryption of model updates (the only module that imports TenSEAL).

Key material
------------
``keygen`` writes two contexts that share one key pair:

* ``secret.ctx`` – parameters, public key and SECRET key. For warehouse nodes and the planner.
  Written with file mode 0600.
* ``public.ctx`` – parameters and public key only. For the coordinator: enough to deserialize and
  add ciphertexts, never to decrypt.

The fingerprint is the SHA-256 of the public context's bytes (TenSEAL serializes it
deterministically), so every holder can recompute it from its own file and nobody has to trust a
label. Every ciphertext travels in an :class:`EncryptedVector` envelope that carries the fingerprint
of the key it was made under; mixing material of different keys is refused before any arithmetic.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tenseal as ts

from common.files import write_private

SECRET_CONTEXT_FILE = "secret.ctx"
PUBLIC_CONTEXT_FILE = "public.ctx"
MANIFEST_FILE = "keys.json"

# Additions only: no multiplicative depth is needed. N=8192 with a 140-bit data modulus keeps
# 128-bit security (SEAL's bound is 218 bits at N=8192) and leaves ~2^99 of head-room above the
# 2^40 scale, so sums of n·w over many nodes never wrap.
DEFAULT_POLY_MODULUS = 8192
DEFAULT_COEFF_BITS = (60, 40, 40, 60)
DEFAULT_SCALE_BITS = 40

_MAGIC = b"FSCKKS1\n"


class CryptoError(ValueError):
    """Key material or ciphertext that cannot be used (wrong key, corrupt bytes, bad shape)."""


class KeyMismatchError(CryptoError):
    """Material made under another key pair than ours."""


@dataclass(frozen=True)
class KeyContext:
    """A loaded TenSEAL context plus its fingerprint."""

    context: ts.Context
    fingerprint: str

    @property
    def has_secret_key(self) -> bool:
        return self.context.has_secret_key()

    @property
    def slot_count(self) -> int:
        return self.context.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2


def _public_bytes(context: ts.Context) -> bytes:
    return context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )


def fingerprint_of(context: ts.Context) -> str:
    return hashlib.sha256(_public_bytes(context)).hexdigest()[:32]


def keygen(
    out_dir: str | Path,
    poly_modulus_degree: int = DEFAULT_POLY_MODULUS,
    coeff_mod_bit_sizes: tuple[int, ...] = DEFAULT_COEFF_BITS,
    scale_bits: int = DEFAULT_SCALE_BITS,
) -> str:
    """Generate a CKKS key pair; write secret.ctx (0600), public.ctx and keys.json. Return fingerprint."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=poly_modulus_degree,
        coeff_mod_bit_sizes=list(coeff_mod_bit_sizes),
    )
    ctx.global_scale = 2**scale_bits
    public = _public_bytes(ctx)
    fingerprint = hashlib.sha256(public).hexdigest()[:32]
    secret = ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    write_private(out / SECRET_CONTEXT_FILE, secret)
    (out / PUBLIC_CONTEXT_FILE).write_bytes(public)
    manifest = {
        "fingerprint": fingerprint,
        "scheme": "CKKS",
        "poly_modulus_degree": poly_modulus_degree,
        "coeff_mod_bit_sizes": list(coeff_mod_bit_sizes),
        "scale_bits": scale_bits,
        "files": {"secret": SECRET_CONTEXT_FILE, "public": PUBLIC_CONTEXT_FILE},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return fingerprint


def load_context(path: str | Path, expect_fingerprint: str | None = None) -> KeyContext:
    """Load a context file; refuse it if its fingerprint is not the expected one."""
    p = Path(path)
    if not p.is_file():
        raise CryptoError(f"context file not found: {p}")
    try:
        ctx = ts.context_from(p.read_bytes())
    except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on bad bytes
        raise CryptoError(f"{p} is not a TenSEAL context ({exc})") from None
    fp = fingerprint_of(ctx)
    if expect_fingerprint is not None and fp != expect_fingerprint:
        raise KeyMismatchError(
            f"context {p} has fingerprint {fp}, expected {expect_fingerprint}: wrong key material"
        )
    return KeyContext(ctx, fp)


@dataclass(frozen=True)
class EncryptedVector:
    """A flat float vector encrypted as ceil(length / slots) CKKS ciphertexts."""

    fingerprint: str
    length: int
    chunks: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        header = json.dumps(
            {
                "fingerprint": self.fingerprint,
                "length": self.length,
                "chunk_sizes": [len(c) for c in self.chunks],
            }
        ).encode()
        return _MAGIC + struct.pack(">I", len(header)) + header + b"".join(self.chunks)

    @classmethod
    def from_bytes(cls, blob: bytes) -> EncryptedVector:
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 4:
            raise CryptoError("corrupt ciphertext: missing fedstock CKKS header")
        (hlen,) = struct.unpack(">I", blob[len(_MAGIC) : len(_MAGIC) + 4])
        start = len(_MAGIC) + 4
        try:
            header = json.loads(blob[start : start + hlen])
            fingerprint, length = str(header["fingerprint"]), int(header["length"])
            sizes = [int(s) for s in header["chunk_sizes"]]
        except (ValueError, KeyError, TypeError):
            raise CryptoError("corrupt ciphertext: unreadable header") from None
        body = blob[start + hlen :]
        if sum(sizes) != len(body) or length < 0:
            raise CryptoError(
                f"corrupt ciphertext: header announces {sum(sizes)} bytes, body has {len(body)}"
            )
        chunks, offset = [], 0
        for size in sizes:
            chunks.append(body[offset : offset + size])
            offset += size
        return cls(fingerprint, length, tuple(chunks))


def _check_key(key: KeyContext, vec: EncryptedVector) -> None:
    if vec.fingerprint != key.fingerprint:
        raise KeyMismatchError(f"ciphertext made under key {vec.fingerprint}, ours is {key.fingerprint}")


def _deserialize(key: KeyContext, vec: EncryptedVector) -> list[ts.CKKSVector]:
    _check_key(key, vec)
    try:
        return [ts.ckks_vector_from(key.context, c) for c in vec.chunks]
    except Exception as exc:
        raise CryptoError(f"corrupt ciphertext: {exc}") from None


def encrypt(key: KeyContext, values: np.ndarray) -> EncryptedVector:
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise CryptoError("refusing to encrypt a vector with NaN or infinite values")
    slots = key.slot_count
    chunks = tuple(
        ts.ckks_vector(key.context, flat[i : i + slots].tolist()).serialize()
        for i in range(0, max(len(flat), 1), slots)
    )
    return EncryptedVector(key.fingerprint, len(flat), chunks)


def decrypt(key: KeyContext, vec: EncryptedVector) -> np.ndarray:
    if not key.has_secret_key:
        raise CryptoError("this context holds no secret key: it cannot decrypt")
    parts = [np.asarray(c.decrypt(), dtype=np.float64) for c in _deserialize(key, vec)]
    flat = np.concatenate(parts) if parts else np.zeros(0)
    if len(flat) < vec.length:
        raise CryptoError(f"corrupt ciphertext: {len(flat)} values decrypted, {vec.length} announced")
    return flat[: vec.length]


_CHUNK_LIMITS: dict[str, int] = {}


def max_chunk_bytes(key: KeyContext) -> int:
    """Largest plausible serialized ciphertext under this key: a full fresh one, plus a quarter."""
    if key.fingerprint not in _CHUNK_LIMITS:
        probe = np.random.default_rng(0).standard_normal(key.slot_count)
        _CHUNK_LIMITS[key.fingerprint] = len(encrypt(key, probe).chunks[0]) * 5 // 4
    return _CHUNK_LIMITS[key.fingerprint]


def check_shape(key: KeyContext, vec: EncryptedVector, length: int) -> None:
    """Refuse, before any arithmetic, what cannot be an encryption of ``length`` values under key."""
    _check_key(key, vec)
    if vec.length != length:
        raise CryptoError(f"{vec.length} values, expected {length}")
    expected = max(1, -(-length // key.slot_count))
    if len(vec.chunks) != expected:
        raise CryptoError(f"{len(vec.chunks)} ciphertexts for {length} values, expected {expected}")
    largest, limit = max(len(c) for c in vec.chunks), max_chunk_bytes(key)
    if largest > limit:
        raise CryptoError(f"oversized ciphertext: {largest} bytes, at most {limit} expected")


class RunningSum:
    """Homomorphic sum built one vector at a time, so that a bad vector spoils only itself.

    Needs no secret key. Holds one set of ciphertexts, never every input at once.
    """

    def __init__(self, key: KeyContext, length: int) -> None:
        self.key, self.length = key, length
        self._total: list[ts.CKKSVector] | None = None

    def add(self, vec: EncryptedVector) -> None:
        """Add one vector; raise CryptoError (leaving the sum unchanged) if it is unusable."""
        check_shape(self.key, vec, self.length)
        parts = _deserialize(self.key, vec)
        try:
            summed = (
                parts if self._total is None else [a + b for a, b in zip(self._total, parts, strict=True)]
            )
        except (ValueError, RuntimeError) as exc:  # e.g. another scale or level than the sum so far
            raise CryptoError(f"ciphertext cannot be added: {exc}") from None
        self._total = summed

    def result(self) -> EncryptedVector:
        if self._total is None:
            raise CryptoError("nothing to add")
        return EncryptedVector(self.key.fingerprint, self.length, tuple(c.serialize() for c in self._total))


def add(key: KeyContext, vectors: list[EncryptedVector]) -> EncryptedVector:
    """Homomorphic sum of same-length vectors. Needs no secret key."""
    if not vectors:
        raise CryptoError("nothing to add")
    total = RunningSum(key, vectors[0].length)
    for v in vectors:
        if v.length != total.length:
            raise CryptoError(f"cannot add vectors of length {v.length} and {total.length}")
        total.add(v)
    return total.result()
