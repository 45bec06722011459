"""Signed tree heads: the RFC 6962 bytes, Ed25519 signing and verification, and keys."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.registry.audit import signing
from services.registry.audit.signing import (
    SignedTreeHead,
    SigningKeyMissing,
    key_from_pem,
    key_from_value,
    key_id,
    key_seed,
    load_or_create_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign_tree_head,
    signed_bytes,
    verify_tree_head,
    write_new_key,
)

ROOT = hashlib.sha256(b"a root").digest()
OTHER_ROOT = hashlib.sha256(b"another root").digest()
# RFC 8032 7.1 TEST 1: a fixed seed, so the tests see the same key every run.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def head(**changes: Any) -> SignedTreeHead:
    signed = sign_tree_head(KEY, tree_size=8, timestamp_ms=1_700_000_000_123, root=ROOT,
                            last_position=41)
    return replace(signed, **changes)


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


# --- The signed bytes --------------------------------------------------------------------


def test_signed_bytes_are_the_rfc6962_tree_head_signature_struct() -> None:
    data = signed_bytes(0x1112131415161718, 0x0102030405060708, ROOT)
    assert len(data) == 50
    assert data[0] == 0  # version v1
    assert data[1] == 1  # signature_type tree_hash
    assert data[2:10] == bytes.fromhex("0102030405060708")  # timestamp, big-endian
    assert data[10:18] == bytes.fromhex("1112131415161718")  # tree_size, big-endian
    assert data[18:] == ROOT
    assert data == b"\x00\x01" + struct.pack(">QQ", 0x0102030405060708, 0x1112131415161718) + ROOT


@pytest.mark.parametrize(("size", "timestamp", "root"), [
    (-1, 0, ROOT), (1 << 64, 0, ROOT), (0, -1, ROOT), (0, 1 << 64, ROOT),
    (0, 0, ROOT[:31]), (0, 0, ROOT + b"\x00"),
])
def test_signed_bytes_refuse_what_the_struct_cannot_hold(
    size: int, timestamp: int, root: bytes
) -> None:
    with pytest.raises(ValueError):
        signed_bytes(size, timestamp, root)


def test_the_signature_is_ed25519_over_exactly_the_signed_bytes() -> None:
    signed = head()
    expected = b"\x00\x01" + struct.pack(">QQ", 1_700_000_000_123, 8) + ROOT
    KEY.public_key().verify(base64.b64decode(signed.signature), expected)  # raises if not


# --- Sign and verify ---------------------------------------------------------------------


def test_a_signed_tree_head_verifies_and_survives_json() -> None:
    signed = head()
    assert signed.tree_size == 8 and signed.timestamp_ms == 1_700_000_000_123
    assert signed.root_hash == ROOT.hex() and signed.last_position == 41
    assert signed.key_id == key_id(KEY.public_key())
    assert verify_tree_head(signed, KEY.public_key())
    document = json.loads(json.dumps(signed.as_dict()))
    assert document == {
        "tree_size": 8, "timestamp": 1_700_000_000_123, "root_hash": ROOT.hex(),
        "last_position": 41, "key_id": signed.key_id, "signature": signed.signature,
        "signature_algorithm": "ed25519",
    }
    parsed = SignedTreeHead.from_dict(document)
    assert parsed == signed
    assert verify_tree_head(parsed, load_public_key(public_key_pem(KEY)))


@pytest.mark.parametrize("changes", [
    {"tree_size": 9},
    {"tree_size": 0},
    {"timestamp_ms": 1_700_000_000_124},
    {"root_hash": OTHER_ROOT.hex()},
    {"signature": sign_tree_head(KEY, 8, 1_700_000_000_123, OTHER_ROOT, 41).signature},
    {"signature": base64.b64encode(bytes(64)).decode()},
    {"key_id": key_id(OTHER_KEY.public_key())},
], ids=["size", "size 0", "timestamp", "root", "other signature", "zero signature", "key id"])
def test_any_change_to_a_signed_field_fails(changes: dict[str, Any]) -> None:
    assert not verify_tree_head(head(**changes), KEY.public_key())


def test_the_last_position_is_not_signed() -> None:
    assert verify_tree_head(head(last_position=7), KEY.public_key())


def test_another_key_fails_even_when_the_head_names_it() -> None:
    assert not verify_tree_head(head(), OTHER_KEY.public_key())
    # The right key id but a signature by the wrong key.
    assert not verify_tree_head(head(key_id=key_id(OTHER_KEY.public_key())),
                                OTHER_KEY.public_key())


@pytest.mark.parametrize("changes", [
    {"signature": "not base64!"},
    {"signature": base64.b64encode(bytes(63)).decode()},
    {"signature": 7},
    {"root_hash": "zz"},
    {"root_hash": ROOT.hex()[:-2]},
    {"root_hash": None},
    {"tree_size": -1},
    {"tree_size": 1 << 64},
    {"tree_size": "8"},
    {"timestamp_ms": 1.5},
    {"key_id": None},
])
def test_a_malformed_head_fails_without_raising(changes: dict[str, Any]) -> None:
    assert verify_tree_head(head(**changes), KEY.public_key()) is False


def test_a_key_of_the_wrong_kind_fails_without_raising() -> None:
    assert verify_tree_head(head(), KEY) is False  # type: ignore[arg-type]
    assert verify_tree_head(head(), None) is False  # type: ignore[arg-type]
    assert verify_tree_head("a head", KEY.public_key()) is False  # type: ignore[arg-type]


def test_key_id_is_the_sha256_of_the_raw_public_key() -> None:
    assert key_id(KEY.public_key()) == hashlib.sha256(raw_public(KEY)).hexdigest()
    # RFC 8032 7.1 TEST 1's public key.
    assert raw_public(KEY).hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


# --- Parsing a document ------------------------------------------------------------------

GOOD = head().as_dict()


@pytest.mark.parametrize(("changes", "message"), [
    ({"tree_size": None}, "tree_size must be a int"),
    ({"tree_size": True}, "tree_size must be a int"),
    ({"tree_size": -1}, "tree_size"),
    ({"timestamp": 1 << 64}, "timestamp"),
    ({"timestamp": "1700000000123"}, "timestamp must be a int"),
    ({"last_position": 1.0}, "last_position"),
    ({"root_hash": "xyz"}, "root_hash is not hexadecimal"),
    ({"root_hash": "abcd"}, "root_hash is 2 bytes"),
    ({"key_id": 5}, "key_id must be a str"),
    ({"signature": "***"}, "signature is not valid base64"),
    ({"signature": base64.b64encode(b"short").decode()}, "signature is 5 bytes"),
    ({"signature_algorithm": "rsa"}, "signature_algorithm"),
], ids=lambda value: str(value)[:30])
def test_a_malformed_document_is_refused_with_a_reason(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SignedTreeHead.from_dict({**GOOD, **changes})


@pytest.mark.parametrize("field", sorted(GOOD))
def test_a_document_missing_a_field_is_refused(field: str) -> None:
    document = {name: value for name, value in GOOD.items() if name != field}
    with pytest.raises(ValueError, match=f"no {field}"):
        SignedTreeHead.from_dict(document)


def test_a_document_that_is_no_object_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        SignedTreeHead.from_dict([GOOD])  # type: ignore[arg-type]


def test_a_document_with_upper_case_hex_parses_to_the_canonical_form() -> None:
    parsed = SignedTreeHead.from_dict({**GOOD, "root_hash": ROOT.hex().upper()})
    assert parsed == head()


# --- Keys --------------------------------------------------------------------------------


def test_load_or_create_makes_a_private_key_file_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.pem"
    made = load_or_create_key(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert os.listdir(path.parent) == ["audit.pem"]  # no temporary file left behind
    again = load_or_create_key(path, create=True)
    assert raw_public(again) == raw_public(made)
    assert raw_public(load_or_create_key(path, create=False)) == raw_public(made)


def test_a_missing_key_without_create_says_how_to_configure_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    with pytest.raises(SigningKeyMissing) as raised:
        load_or_create_key(path, create=False)
    message = str(raised.value)
    assert str(path) in message
    assert "DEALREG_SIGNING_KEY_FILE" in message and "DEALREG_SIGNING_KEY " in message
    assert "dealreg audit new-signing-key --out FILE" in message
    assert not path.exists()


def test_a_key_another_process_wrote_first_is_the_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.pem"
    link = os.link

    def racing_link(source: str, target: Path) -> None:
        path.write_bytes(private_key_pem(OTHER_KEY))  # the other process wins the race
        link(source, target)

    monkeypatch.setattr(signing.os, "link", racing_link)
    assert raw_public(load_or_create_key(path, create=True)) == raw_public(OTHER_KEY)
    assert os.listdir(tmp_path) == ["audit.pem"]


def test_a_key_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.pem"
    path.write_bytes(private_key_pem(KEY))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="dealreg.audit"):
        assert raw_public(load_or_create_key(path, create=False)) == raw_public(KEY)
    assert "chmod 600" in caplog.text


def test_a_key_file_that_holds_no_key_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(ValueError, match=str(path)):
        load_or_create_key(path, create=True)
    assert path.read_text() == "not a key"  # never replaced


def test_write_new_key_refuses_to_replace_a_key(tmp_path: Path) -> None:
    path = tmp_path / "out" / "audit.pem"
    made = write_new_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_new_key(path)
    assert raw_public(key_from_pem(path.read_bytes())) == raw_public(made)
    assert os.listdir(path.parent) == ["audit.pem"]


def test_key_from_value_takes_pem_text_or_a_base64_seed() -> None:
    from_pem = key_from_value(private_key_pem(KEY).decode())
    from_seed = key_from_value(base64.b64encode(SEED).decode())
    assert raw_public(from_pem) == raw_public(from_seed) == raw_public(KEY)
    assert raw_public(key_from_value(f"  {key_seed(OTHER_KEY)}\n")) == raw_public(OTHER_KEY)


@pytest.mark.parametrize("value", [
    "",
    "not base64!",
    base64.b64encode(bytes(31)).decode(),
    base64.b64encode(bytes(64)).decode(),
    "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode(),
], ids=["empty", "not base64", "31 bytes", "64 bytes", "bad pem", "ec key"])
def test_key_from_value_refuses_anything_else_without_echoing_it(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        key_from_value(value)
    if value:
        assert value.strip() not in str(raised.value)


def test_load_public_key_takes_pem_or_base64_raw_bytes() -> None:
    from_pem = load_public_key(public_key_pem(KEY))
    from_raw = load_public_key(base64.b64encode(raw_public(KEY)).decode())
    assert key_id(from_pem) == key_id(from_raw) == key_id(KEY.public_key())
    assert public_key_pem(KEY) == public_key_pem(KEY.public_key())
    with pytest.raises(ValueError):
        load_public_key(base64.b64encode(bytes(33)).decode())
    with pytest.raises(ValueError):
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
