"""The key that signs the tree heads, as the settings say where it is.

DEALREG_SIGNING_KEY (the PEM or base64 seed itself) wins over DEALREG_SIGNING_KEY_FILE,
which defaults to `tree-head-signing.pem` in the data folder. A missing default file is
created on first start in embedded mode (an SQLite store, one machine). On PostgreSQL every
replica of the write service must sign with the same key, so there it is configured, never
made up by whichever process starts first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.registry.audit.signing import (
    SignedTreeHead,
    key_from_value,
    key_id,
    load_or_create_key,
    public_key_pem,
    sign_tree_head,
)
from services.shared.settings import Settings

DEFAULT_KEY_FILE = "tree-head-signing.pem"


@dataclass(frozen=True)
class TreeHeadSigner:
    key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def public_key_pem(self) -> str:
        return public_key_pem(self.key)

    def sign(self, tree_size: int, timestamp_ms: int, root: bytes,
             last_position: int) -> SignedTreeHead:
        return sign_tree_head(self.key, tree_size, timestamp_ms, root, last_position)


def signing_key_file(settings: Settings) -> Path:
    return settings.signing_key_file or settings.data_dir / DEFAULT_KEY_FILE


def tree_head_signer(settings: Settings) -> TreeHeadSigner:
    """The signer the settings name; raises SigningKeyMissing (its message says how to
    configure one) where a key must be configured and is not."""
    if settings.signing_key is not None:
        return TreeHeadSigner(key_from_value(settings.signing_key.get_secret_value()))
    path = signing_key_file(settings)
    create = settings.signing_key_file is None and settings.database_url is None
    return TreeHeadSigner(load_or_create_key(path, create=create))
