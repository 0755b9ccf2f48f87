"""Keys (Eq. 2, 4-6): determinism, kinds, files, and that nothing printed reveals them."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from fedvit_utils.keys import (
    KEY_KINDS,
    IllConditionedKeyError,
    KeyFileError,
    KeyMismatchError,
    SecretKey,
    check_condition,
    client_keys,
    generate_key,
    key_of_client,
)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_same_seed_same_key_other_seed_other_key(kind):
    a, b = generate_key(32, 4, kind=kind, seed=7), generate_key(32, 4, kind=kind, seed=7)
    c = generate_key(32, 4, kind=kind, seed=8)
    assert a == b and a.matrix.tobytes() == b.matrix.tobytes()
    assert np.array_equal(a.block_permutation, b.block_permutation)
    assert a != c and a.fingerprint != c.fingerprint


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_key_shapes_and_invertibility(kind):
    key = generate_key((32, 16), 8, channels=3, kind=kind, seed=1)
    assert key.num_blocks == 4 * 2 and key.block_length == 8 * 8 * 3
    assert sorted(key.block_permutation.tolist()) == list(range(8))
    np.testing.assert_allclose(key.matrix @ key.inverse_matrix, np.eye(192), atol=1e-9)
    if kind == "permutation":
        assert set(np.unique(key.matrix)) == {0.0, 1.0} and (key.matrix.sum(0) == 1).all()
    if kind == "orthogonal":
        assert key.condition_number() == pytest.approx(1.0, abs=1e-9)


def test_client_keys_are_independent_and_reproducible():
    keys = client_keys(5, 32, 8, kind="orthogonal", seed=3)
    assert len({k.fingerprint for k in keys}) == 5
    assert keys == client_keys(5, 32, 8, kind="orthogonal", seed=3)


def test_repr_and_str_never_show_key_material():
    key = generate_key(16, 4, kind="permutation", seed=0)
    text = repr(key) + str(key) + f"{key}"
    assert key.fingerprint in text
    assert "[" not in text and "array" not in text
    assert str(key.block_permutation.tolist()) not in text
    with pytest.raises(TypeError, match="not picklable"):
        import pickle

        pickle.dumps(key)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_save_load_round_trip_owner_only(tmp_path, kind):
    key = generate_key(32, 4, kind=kind, seed=5)
    path = key.save(tmp_path / "keys" / "client0.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SecretKey.load(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["client0.key"]  # no temp file left behind


def test_truncated_tampered_and_missing_files_fail_loudly(tmp_path):
    key = generate_key(32, 4, kind="orthogonal", seed=5)
    path = key.save(tmp_path / "k.key")
    raw = path.read_bytes()
    (tmp_path / "trunc.key").write_bytes(raw[: len(raw) // 2])
    os.chmod(tmp_path / "trunc.key", 0o600)
    with pytest.raises(KeyFileError, match="truncated"):
        SecretKey.load(tmp_path / "trunc.key")
    with pytest.raises(KeyFileError, match="no key file"):
        SecretKey.load(tmp_path / "absent.key")
    # Tamper: a valid archive whose matrix differs from the checksummed one.
    with np.load(path) as data:
        arrays = {n: data[n] for n in data.files}
    arrays["matrix"] = arrays["matrix"].copy()
    arrays["matrix"][0, 0] += 1e-3
    np.savez(tmp_path / "tampered.npz", **arrays)
    os.chmod(tmp_path / "tampered.npz", 0o600)
    with pytest.raises(KeyFileError, match="checksum"):
        SecretKey.load(tmp_path / "tampered.npz")
    # Wrong shape: a matrix that does not fit the recorded block size.
    arrays["matrix"] = np.eye(10)
    np.savez(tmp_path / "shape.npz", **arrays)
    os.chmod(tmp_path / "shape.npz", 0o600)
    with pytest.raises(KeyFileError, match="shape"):
        SecretKey.load(tmp_path / "shape.npz")


def test_image_size_not_divisible_by_block_size():
    with pytest.raises(KeyMismatchError, match="not divisible by the block size 5"):
        generate_key(32, 5)


def test_gaussian_refuses_ill_conditioned_draws():
    with pytest.raises(IllConditionedKeyError, match="condition number"):
        generate_key(32, 8, kind="gaussian", seed=0, max_condition=2.0)
    singular = np.ones((4, 4))
    with pytest.raises(IllConditionedKeyError, match="singular"):
        check_condition(singular)
    assert check_condition(np.eye(4)) == pytest.approx(1.0)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown key kind"):
        generate_key(32, 4, kind="rot13")


def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = generate_key(32, 4, seed=1).save(tmp_path / "k.key")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others.*chmod 600"):
        SecretKey.load(path)
    os.chmod(path, 0o600)
    assert SecretKey.load(path) == generate_key(32, 4, seed=1)


@pytest.mark.parametrize("meta,message", [
    (b"\xff\xfe not utf-8", "not JSON text"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"format": 1, "kind": "orthogonal", "image_size": "32", "patch_size": 4, "channels": 3}', "image_size"),
    (b'{"format": 1, "kind": "orthogonal", "image_size": [32, 32], "patch_size": 4.0, "channels": 3}', "patch_size"),
    (b'{"format": 1, "kind": "rot13", "image_size": [32, 32], "patch_size": 4, "channels": 3}', "unknown key kind"),
])
def test_crafted_metadata_is_a_key_file_error(tmp_path, meta, message):
    path = generate_key(32, 4, seed=1).save(tmp_path / "k.key")
    with np.load(path) as data:
        arrays = {n: data[n] for n in data.files}
    arrays["meta"] = np.frombuffer(meta, dtype=np.uint8)
    with open(tmp_path / "crafted.key", "wb") as fh:
        np.savez(fh, **arrays)
    os.chmod(tmp_path / "crafted.key", 0o600)
    with pytest.raises(KeyFileError, match=message):
        SecretKey.load(tmp_path / "crafted.key")


def test_nothing_dumps_the_key_material():
    import dataclasses

    key = generate_key(16, 4, kind="orthogonal", seed=0)
    with pytest.raises(TypeError):
        vars(key)
    with pytest.raises(TypeError):
        dataclasses.asdict(key)
    with pytest.raises(AttributeError, match="read-only"):
        key.kind = "permutation"
    with pytest.raises(ValueError):
        key.matrix[0, 0] = 1.0  # the arrays are read-only views


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_one_clients_key_drawn_alone_is_that_client_s_key(kind):
    keys = client_keys(4, 16, 4, kind=kind, seed=7)
    for client in (0, 3):
        alone = key_of_client(client, 4, 16, 4, kind=kind, seed=7)
        assert alone.fingerprint == keys[client].fingerprint
    with pytest.raises(ValueError, match="client 4 is outside 0..3"):
        key_of_client(4, 4, 16, 4, seed=7)
