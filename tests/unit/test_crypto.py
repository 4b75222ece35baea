import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from common import crypto
from common.codec import STATE_TAIL, WEIGHT_UNIT, encode_update, global_weights
from common.model import build_model, model_vector
from tests.conftest import model_config


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


def test_default_parameters_are_128_bit_secure_and_carry_no_evaluation_keys(keys, public_key):
    manifest = json.loads((keys / crypto.MANIFEST_FILE).read_text())
    # SEAL's 128-bit table (HomomorphicEncryption.org standard): at most 109 modulus bits at N=4096
    assert manifest["poly_modulus_degree"] == 4096 and sum(manifest["coeff_mod_bit_sizes"]) <= 109
    assert not public_key.context.has_galois_keys() and not public_key.context.has_relin_keys()
    with pytest.raises(ValueError):  # and SEAL itself refuses anything weaker than 128 bits
        crypto.keygen(keys.parent / "weak", coeff_mod_bit_sizes=(57, 53))


def test_weighted_average_of_100_nodes_is_within_1e_6_of_plaintext_fedavg(secret_key, public_key):
    """Realistic federation: the project's model, weights as large as trained ones (max |w| ≈ 4),
    training windows as on Walmart (≈ 6,500 per store), store_item (76,450) and small sites."""
    rng = np.random.default_rng(5)
    base = model_vector(build_model(model_config(), 0))
    windows = np.concatenate(
        [rng.integers(6000, 6900, 45), np.full(10, 76_450), np.round(10 ** rng.uniform(2, 5, 45))]
    )
    weights = [base + rng.standard_t(5, base.size) * 0.35 for _ in windows]
    assert max(np.abs(w).max() for w in weights) > 3
    total = crypto.RunningSum(public_key, base.size + len(STATE_TAIL))
    for w, n in zip(weights, windows, strict=True):
        total.add(encode_update(secret_key, w, n / WEIGHT_UNIT, 0.3, addends=len(windows)))
    encrypted = global_weights(crypto.decrypt(secret_key, total.result()))
    plain = sum(n * w for n, w in zip(windows, weights, strict=True)) / windows.sum()
    err = encrypted - plain
    assert np.abs(err).max() / np.abs(plain).max() < 1e-6
    assert np.linalg.norm(err) / np.linalg.norm(plain) < 1e-6


def test_sum_at_the_bound_decrypts_and_values_beyond_it_are_refused(secret_key, public_key):
    addends, bound = 50, crypto.sum_bound(secret_key)
    part = np.full(secret_key.slot_count, bound / addends)
    part[::2] *= -1
    summed = crypto.add(public_key, [crypto.encrypt(secret_key, part, addends=addends)] * addends)
    assert np.allclose(crypto.decrypt(secret_key, summed), part * addends, rtol=0, atol=1e-3)
    with pytest.raises(crypto.CryptoError, match="too large: a sum of 51"):
        crypto.encrypt(secret_key, part, addends=addends + 1)


def test_a_vector_at_another_scale_is_refused_even_when_it_comes_first(secret_key, public_key):
    total = crypto.RunningSum(public_key, 10)
    with pytest.raises(crypto.CryptoError, match="scale"):
        total.add(crypto.encrypt(secret_key, np.ones(10), scale_bits=secret_key.scale_bits - 3))
    total.add(crypto.encrypt(secret_key, np.ones(10)))
    assert np.allclose(crypto.decrypt(secret_key, total.result()), 1.0, atol=1e-6)


def test_tenseal_is_used_from_one_thread_only(secret_key):
    with ThreadPoolExecutor(1) as pool:
        attempt = pool.submit(crypto.encrypt, secret_key, np.ones(3))
    with pytest.raises(crypto.CryptoError, match="second thread"):
        attempt.result()
