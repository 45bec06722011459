"""Where the key that signs tree heads comes from: made on first start in embedded mode,
never made up on PostgreSQL (every replica must sign with one key), the variable winning
over the file."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.registry.audit.signing import SigningKeyMissing, key_id, write_new_key
from services.registry.audit.tree_head_key import signing_key_file, tree_head_signer
from services.shared.settings import Settings

PG = "postgresql://postgres@127.0.0.1:1/nowhere"


@pytest.fixture(autouse=True)
def no_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEALREG_SIGNING_KEY", raising=False)
    monkeypatch.delenv("DEALREG_SIGNING_KEY_FILE", raising=False)


def test_embedded_mode_makes_its_key_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = tree_head_signer(settings)
    path = signing_key_file(settings)
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    assert tree_head_signer(settings).key_id == first.key_id


def test_postgres_never_makes_one_up(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyMissing, match="DEALREG_SIGNING_KEY_FILE"):
        tree_head_signer(Settings(data_dir=tmp_path, database_url=PG))
    assert not signing_key_file(Settings(data_dir=tmp_path)).exists()


def test_a_configured_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyMissing):
        tree_head_signer(Settings(data_dir=tmp_path, signing_key_file=tmp_path / "none.pem"))
    made = write_new_key(tmp_path / "key.pem")
    signer = tree_head_signer(Settings(data_dir=tmp_path, database_url=PG,
                                       signing_key_file=tmp_path / "key.pem"))
    assert signer.key_id == key_id(made.public_key())


def test_the_variable_wins(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    seed = base64.b64encode(key.private_bytes_raw()).decode()
    signer = tree_head_signer(Settings(data_dir=tmp_path, database_url=PG,
                                       signing_key=seed))  # type: ignore[arg-type]
    assert signer.key_id == key_id(key.public_key())
