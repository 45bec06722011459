"""Tampering with the stored events table directly is detected, at the right position, on
SQLite and on PostgreSQL; an untouched store verifies clean. One set of assertions, run
once per backend."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.cli import main
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.handlers import RecordingService
from services.registry.audit.checkpoints import (
    CheckpointStore,
    audit_database_url,
    extend_tree,
    take_checkpoint,
)
from services.registry.audit.logged_events import LoggedEvent, read_logged_events
from services.registry.audit.merkle import root_of
from services.registry.audit.signing import public_key_pem
from services.registry.audit.tree_head_key import TreeHeadSigner, tree_head_signer
from services.registry.audit.verification import VerificationReport, verify_log
from services.registry.domain.recorded import event_hash
from services.shared.database import create_sql_engine
from services.shared.settings import Settings
from tests.unit.registry.support import DEAL_ID, pledge_body, record, record_firms_and_deal

pytestmark = pytest.mark.integration


class Audited:
    """A populated event store, its checkpoints, and raw access to its events table."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: DealRegistryStore = open_event_store(settings)
        self.service = RecordingService(self.store)
        self.checkpoints = CheckpointStore(create_sql_engine(audit_database_url(settings)))
        self.checkpoints.create_schema()
        self.signer: TreeHeadSigner = tree_head_signer(settings)
        self.table = self.store.recorder.events_table_name  # type: ignore[attr-defined]

    def populate(self, pledges: int = 4) -> None:
        record_firms_and_deal(self.service)
        for n in range(pledges):
            record(self.service, pledge_body(f"p-{n}", f"pl-{n}", low=str(100 + n),
                                             high=str(200 + n)))

    def events(self) -> list[LoggedEvent]:
        return list(read_logged_events(self.store))

    def deal_event(self, version: int) -> LoggedEvent:
        return next(e for e in self.events()
                    if e.aggregate_id == str(DEAL_ID) and e.version == version)

    def verify(self) -> VerificationReport:
        return verify_log(self.store, self.checkpoints, public_key=self.signer.public_key)

    def checkpoint(self) -> None:
        take_checkpoint(self.store, self.checkpoints, self.signer)

    def close(self) -> None:
        self.service.committer.close()
        self.store.close()
        self.checkpoints.engine.dispose()

    # Raw edits, as someone with write access to the database would make them.

    def _sql(self, statement: str, *params: Any) -> list[Any]:
        if self.settings.database_url is None:
            with sqlite3.connect(self.settings.data_dir / "events.db") as conn:
                rows = conn.execute(statement.replace("%s", "?").replace(
                    "notification_id", "rowid"), params).fetchall()
            return rows
        with psycopg.connect(self.settings.database_url, autocommit=True) as pg:
            cursor = pg.execute(statement, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def flip_a_payload_byte(self, position: int) -> None:
        state = bytes(self._sql(f"SELECT state FROM {self.table} WHERE notification_id=%s",
                                position)[0][0])
        marker = next(m for m in (b'"recorded_by":"', b'"principal":"') if m in state)
        at = state.index(marker) + len(marker)
        tampered = state[:at] + bytes([state[at] + 1]) + state[at + 1:]
        self._sql(f"UPDATE {self.table} SET state=%s WHERE notification_id=%s", tampered,
                  position)

    def delete(self, position: int) -> None:
        self._sql(f"DELETE FROM {self.table} WHERE notification_id=%s", position)

    def swap(self, first: int, second: int) -> None:
        """Exchange two rows' contents (aggregate, version, topic, payload); the positions
        stay where they were."""
        columns = "originator_id, originator_version, topic, state"
        a = self._sql(f"SELECT {columns} FROM {self.table} WHERE notification_id=%s", first)[0]
        b = self._sql(f"SELECT {columns} FROM {self.table} WHERE notification_id=%s", second)[0]
        update = (f"UPDATE {self.table} SET originator_id=%s, originator_version=%s, topic=%s,"
                  " state=%s WHERE notification_id=%s")
        self._sql(update, a[0], -1, a[2], a[3], first)  # out of the primary key's way
        self._sql(update, *a, second)
        self._sql(update, *b, first)


class TamperEvidenceContract:
    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def audited(self, settings: Settings) -> Iterator[Audited]:
        audited = Audited(settings)
        audited.populate()
        try:
            yield audited
        finally:
            audited.close()

    def test_an_untouched_store_verifies_clean(self, audited: Audited) -> None:
        before = audited.verify()
        assert before.ok and before.events_checked == len(audited.events()) >= 8
        audited.checkpoint()
        record(audited.service, pledge_body("later", "pl-later"))
        report = audited.verify()
        assert report.ok, report.failures
        assert report.checkpoints_checked == 1
        assert report.events_checked == len(audited.events())
        assert report.aggregates == 4  # three firms and the deal

    def test_a_changed_payload_byte_fails_at_its_position(self, audited: Audited) -> None:
        audited.checkpoint()
        target, successor = audited.deal_event(2), audited.deal_event(3)
        audited.flip_a_payload_byte(target.position)
        report = audited.verify()
        first = report.first_failure
        assert first is not None
        assert (first.position, first.aggregate_id, first.version, first.kind) == (
            target.position, target.aggregate_id, 2, "checkpoint_mismatch")
        chain = [f for f in report.failures if f.kind == "hash_chain_broken"]
        assert [f.position for f in chain] == [successor.position]

    def test_an_edit_after_the_last_checkpoint_breaks_the_chain(self, audited: Audited) -> None:
        target, successor = audited.deal_event(2), audited.deal_event(3)
        audited.flip_a_payload_byte(target.position)
        first = audited.verify().first_failure
        assert first is not None
        assert (first.position, first.version, first.kind) == (
            successor.position, 3, "hash_chain_broken")
        assert f"position {target.position}" in first.detail

    def test_a_deleted_row_fails_at_its_position(self, audited: Audited) -> None:
        audited.checkpoint()
        target = audited.deal_event(2)
        audited.delete(target.position)
        report = audited.verify()
        first = report.first_failure
        assert first is not None
        assert (first.position, first.aggregate_id, first.version, first.kind) == (
            target.position, target.aggregate_id, 2, "checkpoint_mismatch")
        assert "missing" in first.detail
        assert any(f.kind == "version_gap" for f in report.failures)

    def test_deleting_the_newest_event_is_caught_by_the_checkpoint(
        self, audited: Audited
    ) -> None:
        audited.checkpoint()
        newest = audited.events()[-1]
        audited.delete(newest.position)
        first = audited.verify().first_failure
        assert first is not None and first.position == newest.position

    def test_swapped_rows_fail_at_the_first_swapped_position(self, audited: Audited) -> None:
        audited.checkpoint()
        events = audited.events()
        first_swapped, second_swapped = events[1], events[-2]  # a firm's, a pledge's
        assert first_swapped.aggregate_id != second_swapped.aggregate_id
        audited.swap(first_swapped.position, second_swapped.position)
        first = audited.verify().first_failure
        assert first is not None
        assert (first.position, first.kind) == (first_swapped.position, "checkpoint_mismatch")

    def test_the_tree_is_extended_in_place_and_matches_a_full_recompute(
        self, audited: Audited
    ) -> None:
        signer = audited.signer
        first = take_checkpoint(audited.store, audited.checkpoints, signer, "continuous")
        assert extend_tree(audited.store, audited.checkpoints, signer) is None
        record(audited.service, pledge_body("later", "pl-later"))
        second = extend_tree(audited.store, audited.checkpoints, signer)
        assert second is not None and second.id == first.id  # the newest head, extended
        events = audited.events()
        assert second.event_count == len(events) > first.event_count
        assert second.last_position == events[-1].position
        assert second.root == root_of([e.leaf() for e in events]).hex()
        record(audited.service, pledge_body("later-2", "pl-later-2"))
        kept = extend_tree(audited.store, audited.checkpoints, signer, keep_seconds=0)
        assert kept is not None and kept.id != first.id  # an old head stays in the history
        small = take_checkpoint(audited.store, audited.checkpoints, signer)
        assert small.root == kept.root and audited.checkpoints.count() == 3
        assert audited.verify().ok

    def test_cli_verify_exit_codes(self, audited: Audited, capsys: Any) -> None:
        args = ["audit", "verify", "--data-dir", str(audited.settings.data_dir)]
        assert main(["audit", "checkpoint", "--data-dir", str(audited.settings.data_dir)]) == 0
        assert main(args) == 0
        assert "OK:" in capsys.readouterr().out
        target = audited.deal_event(2)
        audited.flip_a_payload_byte(target.position)
        assert main(args) == 1
        assert f"FAILED at position {target.position}" in capsys.readouterr().err

    def test_export_verifies_offline_and_a_tampered_line_fails_with_its_number(
        self, audited: Audited, tmp_path: Path, capsys: Any
    ) -> None:
        events = audited.events()
        data_dir = ["--data-dir", str(audited.settings.data_dir)]
        export = tmp_path / "export.ndjson"
        range_ = ["--from", str(events[2].position), "--to", str(events[-3].position)]
        assert main(["audit", "export", *range_, "-o", str(export), *data_dir]) == 2
        assert "no signed tree head covers" in capsys.readouterr().err
        audited.checkpoint()
        assert main(["audit", "export", *range_, "-o", str(export), "--proofs", *data_dir]) == 0
        assert main(["audit", "verify-export", str(export)]) == 0
        assert "OK" in capsys.readouterr().out
        lines = export.read_text().splitlines()
        assert len(lines) == 1 + len(events) - 4
        index = next(i for i, line in enumerate(lines) if i > 3 and "recorded_by" in line)
        edited = list(lines)
        edited[index] = lines[index].replace('"recorded_by":"partner-a"',
                                             '"recorded_by":"partner-b"')
        assert edited[index] != lines[index]
        export.write_text("\n".join(edited) + "\n")
        assert main(["audit", "verify-export", str(export)]) == 1
        assert (f"FAILED at line {index + 1}: the event's fields are not what its stored "
                "bytes hold") in capsys.readouterr().err

        # A forger who rewrites the stored bytes, their digest, the fields and the hash
        # together is stopped by the line's inclusion proof.
        forged = json.loads(lines[index])
        state = base64.b64decode(forged["state_base64"]).replace(b"partner-a", b"partner-b")
        forged["state_base64"] = base64.b64encode(state).decode()
        forged["state_sha256"] = hashlib.sha256(state).hexdigest()
        forged["fields"]["recorded_by"] = "partner-b"
        forged["event_hash"] = event_hash(forged["topic"], forged["fields"],
                                          forged["class_version"])
        edited[index] = json.dumps(forged)
        export.write_text("\n".join(edited) + "\n")
        assert main(["audit", "verify-export", str(export)]) == 1
        assert f"FAILED at line {index + 1}: the inclusion proof" in capsys.readouterr().err

    def test_an_export_is_checked_against_the_key_the_auditor_keeps(
        self, audited: Audited, tmp_path: Path, capsys: Any
    ) -> None:
        audited.checkpoint()
        events = audited.events()
        export, kept, other = (tmp_path / "export.ndjson", tmp_path / "kept.pem",
                               tmp_path / "other.pem")
        assert main(["audit", "export", "--from", "1", "--to", str(events[-1].position),
                     "-o", str(export), "--data-dir", str(audited.settings.data_dir)]) == 0
        kept.write_text(public_key_pem(audited.signer.key))
        other.write_text(public_key_pem(Ed25519PrivateKey.generate()))
        assert main(["audit", "verify-export", str(export), "--public-key", str(kept)]) == 0
        assert "the key you gave" in capsys.readouterr().out
        assert main(["audit", "verify-export", str(export), "--public-key", str(other)]) == 1
        assert "FAILED at line 1: the tree head's signature" in capsys.readouterr().err
        header, *rest = export.read_text().splitlines()
        moved = json.loads(header)
        moved["tree_head"]["root_hash"] = "00" * 32
        export.write_text("\n".join([json.dumps(moved), *rest]) + "\n")
        assert main(["audit", "verify-export", str(export), "--public-key", str(kept)]) == 1
        assert "FAILED at line 1: the tree head's signature" in capsys.readouterr().err


class TestOnSQLite(TamperEvidenceContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=None)


class TestOnPostgreSQL(TamperEvidenceContract):
    @pytest.fixture
    def settings(self, postgres_url: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Settings:
        monkeypatch.setenv("DEALREG_DATABASE_URL", postgres_url)  # what the CLI reads
        return Settings(data_dir=tmp_path / "data", database_url=postgres_url)
