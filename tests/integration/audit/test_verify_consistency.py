"""`dealreg audit verify-consistency HEAD.json` against the store, on SQLite and PostgreSQL:
a log that only grew since the kept head passes; an edited, forged or truncated one fails,
whatever the tree tables were made to say."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli import main
from services.registry.audit.checkpoints import take_checkpoint
from services.registry.audit.signing import public_key_pem
from services.shared.settings import Settings
from tests.integration.audit.test_tamper_evidence import Audited
from tests.unit.registry.support import firm_body, pledge_body, record

pytestmark = pytest.mark.integration


class ConsistencyContract:
    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def kept(self, settings: Settings, tmp_path: Path) -> Iterator[tuple[Audited, Path]]:
        audited = Audited(settings)
        try:
            audited.populate(pledges=2)
            head = take_checkpoint(audited.store, audited.checkpoints, audited.signer)
            signed = head.signed_head()
            assert signed is not None
            kept_file = tmp_path / "kept-head.json"
            kept_file.write_text(json.dumps(signed.as_dict()))
            (tmp_path / "public.pem").write_text(public_key_pem(audited.signer.key))
            record(audited.service, pledge_body("later", "pl-later"))
            record(audited.service, firm_body("lohum", "IN", "recycler"))
            take_checkpoint(audited.store, audited.checkpoints, audited.signer)
            yield audited, kept_file
        finally:
            audited.close()

    def check(self, audited: Audited, kept_file: Path) -> int:
        return main(["audit", "verify-consistency", str(kept_file),
                     "--public-key", str(kept_file.parent / "public.pem"),
                     "--data-dir", str(audited.settings.data_dir)])

    def test_a_log_that_only_grew_extends_the_kept_head(
            self, kept: tuple[Audited, Path], capsys: Any) -> None:
        audited, kept_file = kept
        assert self.check(audited, kept_file) == 0
        assert "extend the kept head" in capsys.readouterr().out

    def test_an_edit_before_the_kept_head_fails(
            self, kept: tuple[Audited, Path], capsys: Any) -> None:
        audited, kept_file = kept
        audited.flip_a_payload_byte(audited.events()[1].position)
        assert self.check(audited, kept_file) == 1
        assert "history was rewritten" in capsys.readouterr().err

    def test_a_truncated_log_fails(self, kept: tuple[Audited, Path], capsys: Any) -> None:
        audited, kept_file = kept
        size = json.loads(kept_file.read_text())["tree_size"]
        for event in audited.events()[size - 1:]:
            audited.delete(event.position)
        assert self.check(audited, kept_file) == 1
        assert "events were removed" in capsys.readouterr().err

    def test_a_forged_tail_with_its_tree_rebuilt_still_fails(
            self, kept: tuple[Audited, Path], capsys: Any) -> None:
        """A forger with write access to every table and without the key: the kept head's
        events are replaced, the tree tables emptied and rebuilt from the forged log."""
        audited, kept_file = kept
        audited.flip_a_payload_byte(audited.events()[2].position)
        for table in ("dealreg_audit_leaves", "dealreg_audit_nodes",
                      "dealreg_audit_checkpoints"):
            audited._sql(f"DELETE FROM {table}")
        assert self.check(audited, kept_file) == 1
        assert "history was rewritten" in capsys.readouterr().err

    def test_an_altered_kept_head_is_refused(
            self, kept: tuple[Audited, Path], capsys: Any) -> None:
        audited, kept_file = kept
        head = json.loads(kept_file.read_text())
        kept_file.write_text(json.dumps({**head, "root_hash": "00" * 32}))
        assert self.check(audited, kept_file) == 1
        assert "signature does not verify" in capsys.readouterr().err


class TestOnSQLite(ConsistencyContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=None)


class TestOnPostgreSQL(ConsistencyContract):
    @pytest.fixture
    def settings(self, postgres_url: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Settings:
        monkeypatch.setenv("DEALREG_DATABASE_URL", postgres_url)  # what the CLI reads
        return Settings(data_dir=tmp_path / "data", database_url=postgres_url)
