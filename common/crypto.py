"""CKKS encryption of model updates (the only module that imports TenSEAL).

Key material
------------
``keygen`` writes two contexts that share one key pair:

* ``secret.ctx`` – parameters, public key and SECRET key. For the warehouse nodes only (made at
  one of them, ``fedstock-node keygen``). Written with file mode 0600.
* ``public.ctx`` – parameters and public key only. For the coordinator and the planner
  (``publish_keys``, ``load_public``): enough to deserialize and add ciphertexts, never to decrypt.

Parameters (measured in BENCHMARKS.md, "CKKS overhead")
--------------------------------------------------------
Aggregation needs additions only, so no multiplicative depth, Galois or relinearization keys are
kept. N=4096 is the smallest ring with 2048 slots per ciphertext; SEAL's 128-bit table allows 109
coefficient-modulus bits there and we use 76: a 56-bit data prime (a serialized ciphertext holds
one 64-bit word per coefficient; SEAL's zstd squeezes the unused bits, so 56 bits cost 7.6x float32
where 60 cost 8.0x) and a 20-bit special prime, which only key switching would use. Values travel at
scale 2^35: fresh noise is about 2^12 / 2^35 = 1.2e-7 per value, and a sum may reach
``sum_bound`` = 2^(56 - 2 - 35) = 2^19 before it wraps. Callers keep their sums inside that bound
(common/codec.py: WEIGHT_UNIT) or pick a lower scale for large values (``scale_bits``).

TenSEAL is used from one thread per process: contexts are made with ``n_threads=1`` (no worker
pool) and every operation checks that it runs on the thread that loaded the key.

The fingerprint is the SHA-256 of the public context's bytes (TenSEAL serializes it
deterministically), so every holder can recompute it from its own file and nobody has to trust a
label. Every ciphertext travels in an :class:`EncryptedVector` envelope that carries the fingerprint
of the key it was made under; mixing material of different keys is refused before any arithmetic.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tenseal as ts

from common.files import write_private

SECRET_CONTEXT_FILE = "secret.ctx"
PUBLIC_CONTEXT_FILE = "public.ctx"
MANIFEST_FILE = "keys.json"

DEFAULT_POLY_MODULUS = 4096
DEFAULT_COEFF_BITS = (56, 20)  # data prime, special prime
DEFAULT_SCALE_BITS = 35

_MAGIC = b"FSCKKS1\n"


class CryptoError(ValueError):
    """Key material or ciphertext that cannot be used (wrong key, corrupt bytes, bad shape)."""


class KeyMismatchError(CryptoError):
    """Material made under another key pair than ours."""


@dataclass(frozen=True)
class KeyContext:
    """A loaded TenSEAL context plus its fingerprint and the thread allowed to use it."""

    context: ts.Context
    fingerprint: str
    thread: int = field(default_factory=threading.get_ident)

    @property
    def has_secret_key(self) -> bool:
        return self.context.has_secret_key()

    @property
    def slot_count(self) -> int:
        return self.context.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2

    @property
    def data_bits(self) -> int:
        """Bits of the modulus that ciphertexts are made at (the special prime excluded)."""
        return self.context.seal_context().data.first_context_data().total_coeff_modulus_bit_count()

    @property
    def scale_bits(self) -> int:
        return round(math.log2(self.context.global_scale))

    def check_thread(self) -> None:
        if threading.get_ident() != self.thread:
            raise CryptoError("TenSEAL key used from a second thread: use one thread per process")


def sum_bound(key: KeyContext, scale_bits: int | None = None) -> float:
    """Largest |value| a sum of ciphertexts may reach at this scale and still decrypt (1 bit of margin)."""
    return 2.0 ** (key.data_bits - 2 - (key.scale_bits if scale_bits is None else scale_bits))


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
        n_threads=1,
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


def publish_keys(keys_dir: str | Path, out_dir: str | Path) -> str:
    """Copy the public half of a key pair (public.ctx, keys.json) to ``out_dir``: what the key
    steward hands the coordinator and the planner. Refuses a folder that already holds keys."""
    public = load_public(keys_dir)
    out = Path(out_dir)
    if any((out / name).exists() for name in (SECRET_CONTEXT_FILE, PUBLIC_CONTEXT_FILE, MANIFEST_FILE)):
        raise CryptoError(f"{out} already holds key files: refusing to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    for name in (PUBLIC_CONTEXT_FILE, MANIFEST_FILE):
        (out / name).write_bytes((Path(keys_dir) / name).read_bytes())
    return public.fingerprint


def load_public(keys_dir: str | Path) -> KeyContext:
    """The public context of a keys folder, checked against its keys.json; a public.ctx that holds
    a secret key is refused."""
    folder = Path(keys_dir)
    manifest = folder / MANIFEST_FILE
    try:
        fingerprint = str(json.loads(manifest.read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CryptoError(f"{manifest} is not a readable keys.json ({type(exc).__name__}: {exc})") from None
    public = load_context(folder / PUBLIC_CONTEXT_FILE, fingerprint)
    if public.has_secret_key:
        raise CryptoError(f"{folder / PUBLIC_CONTEXT_FILE} holds a secret key: keep it at the sites")
    return public


def load_context(path: str | Path, expect_fingerprint: str | None = None) -> KeyContext:
    """Load a context file; refuse it if its fingerprint is not the expected one."""
    p = Path(path)
    if not p.is_file():
        raise CryptoError(f"context file not found: {p}")
    try:
        ctx = ts.context_from(p.read_bytes(), n_threads=1)
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
    """A flat float vector encrypted as ceil(length / slots) CKKS ciphertexts.

    ``from_bytes`` keeps views into the message's bytes, not copies: a coordinator holding a round's
    replies holds each update once."""

    fingerprint: str
    length: int
    chunks: tuple[bytes | memoryview, ...]

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
        body = memoryview(blob)[start + hlen :]
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
    key.check_thread()
    try:
        return [ts.ckks_vector_from(key.context, bytes(c)) for c in vec.chunks]
    except Exception as exc:
        raise CryptoError(f"corrupt ciphertext: {exc}") from None


def encrypt(
    key: KeyContext, values: np.ndarray, scale_bits: int | None = None, addends: int = 1
) -> EncryptedVector:
    """Encrypt at 2^scale_bits (default: the key's scale). Refuse values that a sum of ``addends``
    such vectors could push past ``sum_bound``: a wrapped sum would decrypt to garbage, silently."""
    key.check_thread()
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise CryptoError("refusing to encrypt a vector with NaN or infinite values")
    bound = sum_bound(key, scale_bits) / max(addends, 1)
    if len(flat) and (peak := float(np.abs(flat).max())) > bound:
        raise CryptoError(
            f"value {peak:.4g} too large: a sum of {addends} would exceed what the key holds "
            f"at scale 2^{key.scale_bits if scale_bits is None else scale_bits} (each at most {bound:.4g})"
        )
    slots, scale = key.slot_count, 2.0 ** (key.scale_bits if scale_bits is None else scale_bits)
    chunks = tuple(
        ts.ckks_vector(key.context, flat[i : i + slots].tolist(), scale=scale).serialize()
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


_FRESH: dict[str, tuple[int, int]] = {}  # fingerprint -> (bytes of a full fresh ciphertext, primes)


def _fresh_profile(key: KeyContext) -> tuple[int, int]:
    if key.fingerprint not in _FRESH:
        probe = np.random.default_rng(0).standard_normal(key.slot_count)
        (chunk,) = encrypt(key, probe).chunks
        (ct,) = ts.ckks_vector_from(key.context, chunk).ciphertext()
        _FRESH[key.fingerprint] = len(chunk), ct.coeff_modulus_size()
    return _FRESH[key.fingerprint]


def max_chunk_bytes(key: KeyContext) -> int:
    """Largest plausible serialized ciphertext under this key: a full fresh one, plus a quarter."""
    return _fresh_profile(key)[0] * 5 // 4


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


def _check_made_fresh(key: KeyContext, parts: list[ts.CKKSVector], scale_bits: int) -> None:
    """Each ciphertext must be what ``encrypt`` makes: two polynomials at the data level and scale."""
    primes = _fresh_profile(key)[1]
    for part in parts:
        (ct,) = part.ciphertext()
        if ct.size() != 2 or ct.coeff_modulus_size() != primes or ct.scale != 2.0**scale_bits:
            raise CryptoError(
                f"ciphertext of size {ct.size()}, {ct.coeff_modulus_size()} primes, scale {ct.scale:.6g}; "
                f"expected 2, {primes}, 2^{scale_bits}"
            )


class RunningSum:
    """Homomorphic sum built one vector at a time, so that a bad vector spoils only itself.

    Needs no secret key. Holds one set of ciphertexts, never every input at once. Every input must
    be at ``scale_bits`` (default: the key's scale), so the first reply cannot set it for the rest.
    """

    def __init__(self, key: KeyContext, length: int, scale_bits: int | None = None) -> None:
        self.key, self.length = key, length
        self.scale_bits = key.scale_bits if scale_bits is None else scale_bits
        self._total: list[ts.CKKSVector] | None = None

    def add(self, vec: EncryptedVector) -> None:
        """Add one vector; raise CryptoError (leaving the sum unchanged) if it is unusable."""
        check_shape(self.key, vec, self.length)
        parts = _deserialize(self.key, vec)
        _check_made_fresh(self.key, parts, self.scale_bits)
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


def add(key: KeyContext, vectors: list[EncryptedVector], scale_bits: int | None = None) -> EncryptedVector:
    """Homomorphic sum of same-length vectors. Needs no secret key."""
    if not vectors:
        raise CryptoError("nothing to add")
    total = RunningSum(key, vectors[0].length, scale_bits)
    for v in vectors:
        if v.length != total.length:
            raise CryptoError(f"cannot add vectors of length {v.length} and {total.length}")
        total.add(v)
    return total.result()
