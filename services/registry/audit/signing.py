"""Ed25519 keys and signed tree heads for the audit log's Merkle tree.

A signed tree head commits the log to a tree size and root at a time, so a client that kept
one can later demand a consistency proof and catch a rewritten history. The signed bytes are
RFC 6962's TreeHeadSignature, which lets Certificate Transparency tooling check them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

log = logging.getLogger("dealreg.audit")

SIGNATURE_ALGORITHM = "ed25519"
KEY_FILE_VARIABLE = "DEALREG_SIGNING_KEY_FILE"
KEY_VARIABLE = "DEALREG_SIGNING_KEY"
SEED_SIZE = 32
SIGNATURE_SIZE = 64
_SHA256_SIZE = 32
ROOT_SIZE = _SHA256_SIZE
SIGNED_BYTES_SIZE = 50
# RFC 6962 3.5: Version v1 and SignatureType tree_hash.
_V1 = 0
_TREE_HASH = 1
_UINT64_LIMIT = 1 << 64
_PEM_MARK = "-----BEGIN"


class SigningKeyMissing(LookupError):
    """No signing key is configured and none may be made."""


def key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from unencrypted PKCS8 PEM."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        # The message names no key material: it may end up in a log.
        raise ValueError(f"not an unencrypted PKCS8 PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the signing key must be Ed25519, not {type(key).__name__}")
    return key


def key_from_seed(seed: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from the base64 of its raw 32-byte seed."""
    try:
        raw = base64.b64decode(seed.strip(), validate=True)
    except binascii.Error:
        raise ValueError("the signing key seed is not valid base64") from None
    if len(raw) != SEED_SIZE:
        raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, this one {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def key_from_value(value: str) -> Ed25519PrivateKey:
    """The key in DEALREG_SIGNING_KEY: PKCS8 PEM text or a base64 32-byte seed."""
    if _PEM_MARK in value:
        return key_from_pem(value.strip().encode())
    return key_from_seed(value)


def key_seed(key: Ed25519PrivateKey) -> str:
    """The base64 seed of a key, the form key_from_value takes."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_or_create_key(path: Path, create: bool) -> Ed25519PrivateKey:
    """The key in the PEM file at `path`. When there is none, a new key written there if
    `create`, else SigningKeyMissing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise SigningKeyMissing(missing_key_message(path)) from None
        key = Ed25519PrivateKey.generate()
        try:
            _write_key_file(path, key)
        except FileExistsError:
            # Another process made one first: sign with it too, so there is one key id.
            data = path.read_bytes()
        else:
            log.warning("made a new audit signing key %s in %s; keep a copy of it",
                        key_id(key.public_key()), path)
            return key
    _warn_if_readable_by_others(path)
    try:
        return key_from_pem(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def write_new_key(path: Path) -> Ed25519PrivateKey:
    """Make a key and write it to `path` (mode 0600) for `dealreg audit new-signing-key`.
    Raises FileExistsError rather than replace a key that may have signed tree heads."""
    key = Ed25519PrivateKey.generate()
    _write_key_file(path, key)
    return key


def missing_key_message(path: Path | None = None) -> str:
    where = f"no audit signing key at {path}" if path else "no audit signing key is configured"
    return (f"{where}: set {KEY_FILE_VARIABLE} to an Ed25519 PKCS8 PEM file or {KEY_VARIABLE} "
            f"to its PEM text or base64 32-byte seed; make a key file with "
            f"`dealreg audit new-signing-key --out FILE`")


def _write_key_file(path: Path, key: Ed25519PrivateKey) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp makes the file 0600, so the key is never readable by others, even briefly.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(private_key_pem(key))
            file.flush()
            os.fsync(file.fileno())
        # A hard link publishes the whole file at once like a rename, but fails rather than
        # replace a key another process published meanwhile.
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise
        except OSError:
            # A filesystem without hard links: rename, which only narrows that window.
            if path.exists():
                raise FileExistsError(errno.EEXIST, "the key file exists", str(path)) from None
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    # Without this a crash can lose the new name, and with it the key that signed heads.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _warn_if_readable_by_others(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("the audit signing key %s has mode %o; others than its owner can read it "
                    "(chmod 600 it)", path, mode & 0o777)


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The SubjectPublicKeyInfo PEM of a key, to publish for verifiers."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte public key: names the key that signed a tree head."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(pem_or_base64: str) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM or the base64 of its 32 raw bytes."""
    if _PEM_MARK in pem_or_base64:
        try:
            key = serialization.load_pem_public_key(pem_or_base64.strip().encode())
        except (ValueError, UnsupportedAlgorithm) as error:
            raise ValueError(f"not a PEM public key ({error})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"the public key must be Ed25519, not {type(key).__name__}")
        return key
    try:
        raw = base64.b64decode(pem_or_base64.strip(), validate=True)
    except binascii.Error:
        raise ValueError("the public key is neither PEM nor base64") from None
    if len(raw) != SEED_SIZE:
        raise ValueError(f"an Ed25519 public key is {SEED_SIZE} bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class SignedTreeHead:
    """A tree size and root the log signed at a time. last_position, the log position of the
    tree's last leaf, is there for readers and is not signed."""

    tree_size: int
    timestamp_ms: int
    root_hash: str
    last_position: int
    key_id: str
    signature: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "timestamp": self.timestamp_ms,
            "root_hash": self.root_hash,
            "last_position": self.last_position,
            "key_id": self.key_id,
            "signature": self.signature,
            "signature_algorithm": SIGNATURE_ALGORITHM,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> SignedTreeHead:
        """Parse the as_dict form; ValueError saying what is wrong when it is malformed."""
        if not isinstance(document, Mapping):
            raise ValueError(f"a signed tree head is a JSON object, not {type(document).__name__}")
        algorithm = _field(document, "signature_algorithm", str)
        if algorithm != SIGNATURE_ALGORITHM:
            raise ValueError(f"signature_algorithm is {algorithm!r}, not {SIGNATURE_ALGORITHM!r}")
        signature = _field(document, "signature", str)
        try:
            signature_bytes = base64.b64decode(signature, validate=True)
        except binascii.Error:
            raise ValueError("signature is not valid base64") from None
        if len(signature_bytes) != SIGNATURE_SIZE:
            raise ValueError(f"signature is {len(signature_bytes)} bytes, not {SIGNATURE_SIZE}")
        return cls(
            tree_size=_uint64_field(document, "tree_size"),
            timestamp_ms=_uint64_field(document, "timestamp"),
            root_hash=_hex_field(document, "root_hash"),
            last_position=_uint64_field(document, "last_position"),
            key_id=_hex_field(document, "key_id"),
            signature=signature,
        )


def signed_bytes(tree_size: int, timestamp_ms: int, root: bytes) -> bytes:
    """RFC 6962 3.5 TreeHeadSignature: version v1, signature_type tree_hash, uint64 timestamp,
    uint64 tree_size and the 32-byte root, big-endian; 50 bytes."""
    if len(root) != ROOT_SIZE:
        raise ValueError(f"a root hash is {ROOT_SIZE} bytes, not {len(root)}")
    for name, value in (("tree_size", tree_size), ("timestamp", timestamp_ms)):
        if not 0 <= value < _UINT64_LIMIT:
            raise ValueError(f"{name} {value} does not fit in a uint64")
    return struct.pack(">BBQQ", _V1, _TREE_HASH, timestamp_ms, tree_size) + root


def sign_tree_head(key: Ed25519PrivateKey, tree_size: int, timestamp_ms: int, root: bytes,
                   last_position: int) -> SignedTreeHead:
    signature = key.sign(signed_bytes(tree_size, timestamp_ms, root))
    return SignedTreeHead(
        tree_size=tree_size,
        timestamp_ms=timestamp_ms,
        root_hash=root.hex(),
        last_position=last_position,
        key_id=key_id(key.public_key()),
        signature=base64.b64encode(signature).decode(),
    )


def verify_tree_head(head: SignedTreeHead, public_key: Ed25519PublicKey) -> bool:
    """Whether `public_key` signed this tree head. False, never an exception, when anything
    is malformed or the key is another one."""
    try:
        if not isinstance(public_key, Ed25519PublicKey) or head.key_id != key_id(public_key):
            return False
        root = bytes.fromhex(head.root_hash)
        signature = base64.b64decode(head.signature, validate=True)
        if len(signature) != SIGNATURE_SIZE:
            return False
        public_key.verify(signature, signed_bytes(head.tree_size, head.timestamp_ms, root))
    except (InvalidSignature, ValueError, TypeError, AttributeError, struct.error):
        return False
    return True


def _field(document: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in document:
        raise ValueError(f"the signed tree head has no {name}")
    value = document[name]
    # bool is an int subclass, and true is no tree size.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _uint64_field(document: Mapping[str, Any], name: str) -> int:
    value: int = _field(document, name, int)
    if not 0 <= value < _UINT64_LIMIT:
        raise ValueError(f"{name} {value} is not an unsigned 64-bit integer")
    return value


def _hex_field(document: Mapping[str, Any], name: str) -> str:
    value: str = _field(document, name, str)
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{name} is not hexadecimal") from None
    if len(raw) != _SHA256_SIZE:
        raise ValueError(f"{name} is {len(raw)} bytes, not {_SHA256_SIZE}")
    return raw.hex()
