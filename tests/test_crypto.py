import os
import stat

import numpy as np
import pytest

from common import crypto


def test_round_trip_recovers_values(secret_key):
    values = np.random.default_rng(0).normal(size=10_000)
    enc = crypto.encrypt(secret_key, values)
    assert len(enc.chunks) == int(np.ceil(10_000 / secret_key.slot_count))
    back = crypto.decrypt(secret_key, crypto.EncryptedVector.from_bytes(enc.to_bytes()))
    assert np.max(np.abs(back - values)) < 1e-5


def test_homomorphic_weighted_average_matches_plaintext_fedavg(secret_key, public_key):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=5000) for _ in range(4)]
    counts = [120.0, 3400.0, 7.0, 980.0]
    # each node encrypts [n*w, n]; the coordinator (public context only) adds
    updates = [crypto.encrypt(secret_key, np.append(n * w, n)) for n, w in zip(counts, weights, strict=True)]
    summed = crypto.add(public_key, [crypto.EncryptedVector.from_bytes(u.to_bytes()) for u in updates])
    state = crypto.decrypt(secret_key, summed)
    encrypted_avg = state[:-1] / state[-1]
    plain_avg = sum(n * w for n, w in zip(counts, weights, strict=True)) / sum(counts)
    rel = np.abs(encrypted_avg - plain_avg) / np.maximum(np.abs(plain_avg), 1e-3)
    assert rel.max() < 1e-6


def test_coordinator_context_is_public_and_cannot_decrypt(keys, secret_key, public_key):
    assert not public_key.has_secret_key
    assert public_key.fingerprint == secret_key.fingerprint
    enc = crypto.encrypt(secret_key, np.arange(10.0))
    with pytest.raises(crypto.CryptoError, match="no secret key"):
        crypto.decrypt(public_key, enc)
    # even bypassing our guard, TenSEAL itself refuses
    vec = crypto._deserialize(public_key, enc)[0]
    with pytest.raises(ValueError):
        vec.decrypt()
    assert len((keys / crypto.PUBLIC_CONTEXT_FILE).read_bytes()) < len(
        (keys / crypto.SECRET_CONTEXT_FILE).read_bytes()
    )


def test_secret_context_file_is_private(keys):
    mode = stat.S_IMODE(os.stat(keys / crypto.SECRET_CONTEXT_FILE).st_mode)
    assert mode == 0o600


def test_material_from_another_key_is_refused(tmp_path, secret_key):
    other_fp = crypto.keygen(tmp_path / "other")
    other = crypto.load_context(tmp_path / "other" / crypto.SECRET_CONTEXT_FILE)
    assert other_fp != secret_key.fingerprint
    foreign = crypto.encrypt(other, np.ones(4))
    with pytest.raises(crypto.KeyMismatchError):
        crypto.decrypt(secret_key, foreign)
    with pytest.raises(crypto.KeyMismatchError):
        crypto.add(secret_key, [crypto.encrypt(secret_key, np.ones(4)), foreign])
    with pytest.raises(crypto.KeyMismatchError, match="expected"):
        crypto.load_context(tmp_path / "other" / crypto.SECRET_CONTEXT_FILE, secret_key.fingerprint)


@pytest.mark.parametrize("damage", ["truncate", "header", "body"])
def test_corrupt_ciphertext_is_refused(secret_key, damage):
    blob = crypto.encrypt(secret_key, np.ones(100)).to_bytes()
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "header":
        blob = b"garbage" + blob[7:]
    else:
        cut = len(blob) - 5000
        blob = blob[:cut] + bytes(5000)
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt(secret_key, crypto.EncryptedVector.from_bytes(blob))


def test_vectors_of_different_length_are_not_added(secret_key):
    with pytest.raises(crypto.CryptoError, match="length"):
        crypto.add(
            secret_key, [crypto.encrypt(secret_key, np.ones(3)), crypto.encrypt(secret_key, np.ones(4))]
        )
