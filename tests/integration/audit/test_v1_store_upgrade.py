"""A store written by the code before event classes had versions (tests/fixtures: `dealreg
demo --history` recorded by commit 38fa596, then an on-demand checkpoint over its 640
events), opened by today's code on SQLite and on PostgreSQL: it verifies clean, with its
leaf formats named by range; its pledges are read through the upcasters; new events chain
onto the old ones; and the mixed log verifies clean."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from services.registry.application.errors import IdempotencyConflict
from services.registry.audit.checkpoints import extend_tree
from services.registry.audit.logged_events import LoggedEvent
from services.registry.audit.merkle import verify_consistency, verify_inclusion
from services.registry.audit.proofs import consistency_proof, inclusion_proof
from services.shared.settings import Settings
from tests.integration.audit.test_tamper_evidence import Audited
from tests.unit.registry.support import body, firm_body, record

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[2] / "fixtures" / "v1_store_events.db.gz"
FIXTURE_EVENTS = 640


def unpack_fixture(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    target = into / "events.db"
    with gzip.open(FIXTURE) as packed, target.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return target


def copy_into_postgres(fixture: Path, settings: Settings) -> None:
    """The fixture's events, in log order, then its checkpoint and leaves, into a fresh
    PostgreSQL store: positions come out the same, from 1 with no gaps."""
    audited = Audited(settings)  # creates the events and audit tables
    try:
        with sqlite3.connect(fixture) as db:
            rows = db.execute("SELECT originator_id, originator_version, topic, state "
                              "FROM stored_events ORDER BY rowid").fetchall()
            checkpoints = db.execute("SELECT last_position, event_count, root, frontier, "
                                     "created_at, reason FROM dealreg_audit_checkpoints"
                                     ).fetchall()
            leaves = db.execute("SELECT position, leaf_index, aggregate_id, version, leaf "
                                "FROM dealreg_audit_leaves").fetchall()
        audited.store.recorder.insert_events([  # type: ignore[attr-defined]
            StoredEvent(originator_id=UUID(r[0]), originator_version=r[1], topic=r[2],
                        state=r[3]) for r in rows])
    finally:
        audited.close()
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as pg:
        for row in checkpoints:
            pg.execute("INSERT INTO dealreg_audit_checkpoints (last_position, event_count, "
                       "root, frontier, created_at, reason) VALUES (%s, %s, %s, %s, %s, %s)",
                       row)
        with pg.cursor() as cursor:
            cursor.executemany("INSERT INTO dealreg_audit_leaves VALUES (%s, %s, %s, %s, %s)",
                               leaves)


def a_stored_pledge(audited: Audited) -> tuple[str, str, str]:
    """(deal id, pledge id, currency) of a deal whose newest stored event is a v1 pledge:
    a new event on it chains onto an event read through the upcaster."""
    newest: dict[str, LoggedEvent] = {}
    for event in audited.events():
        newest[event.aggregate_id] = event
    for event in newest.values():
        if event.topic == "dealregistry:PledgeMade.v1":
            return (event.aggregate_id, event.fields["pledge_id"], event.fields["currency"])
    raise AssertionError("the fixture holds no deal whose newest event is a pledge")


class UpgradeContract:
    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def upgraded(self, settings: Settings) -> Iterator[Audited]:
        audited = Audited(settings)
        try:
            yield audited
        finally:
            audited.close()

    def test_the_old_store_verifies_clean_and_says_its_leaf_format(
            self, upgraded: Audited) -> None:
        report = upgraded.verify()
        assert report.ok, report.failures
        assert report.events_checked == FIXTURE_EVENTS
        assert (report.signed_heads, report.unsigned_heads) == (0, 1)
        assert [(r["from"], r["to"], r["format"]) for r in report.leaf_formats] == [
            (1, FIXTURE_EVENTS, 1)]

    def test_new_events_chain_onto_old_ones_and_the_mixed_log_verifies(
            self, upgraded: Audited) -> None:
        deal_id, pledge_id, currency = a_stored_pledge(upgraded)
        stored = [e for e in upgraded.events() if e.aggregate_id == deal_id][-1]
        deal = upgraded.store.repository.get(UUID(deal_id))
        assert deal.pledges[pledge_id].amount.currency == currency
        revised = record(upgraded.service, body(
            "upgrade-revision", "pledge_revised",
            {"deal_id": deal_id, "pledge_id": pledge_id, "reason": "after the upgrade",
             "amount": {"low": "1000", "high": "2000", "currency": currency}}))
        newest = upgraded.events()[-1]
        assert newest.position == revised.position
        assert newest.previous_hash == stored.event_hash  # the hash the v1 event was written with
        head = extend_tree(upgraded.store, upgraded.checkpoints, upgraded.signer)
        assert head is not None and head.last_position == upgraded.store.head_position()
        report = upgraded.verify()
        assert report.ok, report.failures
        assert (report.signed_heads, report.signatures_checked) == (1, True)
        assert [(r["from"], r["to"], r["format"]) for r in report.leaf_formats] == [
            (1, FIXTURE_EVENTS, 1), (FIXTURE_EVENTS + 1, upgraded.store.head_position(), 2)]
        # Proofs reach into the range the old checkpoint covered (its nodes were backfilled).
        signed = head.signed_head()
        assert signed is not None
        proof = inclusion_proof(upgraded.checkpoints, 5, signed.tree_size)
        assert verify_inclusion(proof["leaf_index"], signed.tree_size,
                                bytes.fromhex(proof["leaf_hash"]),
                                [bytes.fromhex(h) for h in proof["audit_path"]],
                                bytes.fromhex(signed.root_hash))
        consistency = consistency_proof(upgraded.checkpoints, FIXTURE_EVENTS, signed.tree_size)
        old_root = bytes.fromhex(upgraded.checkpoints.checkpoints()[0].root)
        assert verify_consistency(FIXTURE_EVENTS, signed.tree_size, old_root,
                                  bytes.fromhex(signed.root_hash),
                                  [bytes.fromhex(h) for h in consistency["consistency_path"]])
        # The stored v1 event still hashes as it was written.
        assert stored.event_hash == next(
            e for e in upgraded.events() if e.position == stored.position).event_hash
        assert json.dumps(stored.fields, sort_keys=True)  # canonical, JSON-ready

    def test_receipts_the_old_store_kept_in_its_log_still_answer_retries(
            self, upgraded: Audited) -> None:
        """Stores written before receipts were kept beside the log hold each as an event."""
        kept = next(e for e in upgraded.events()
                    if e.topic == "dealregistry:IngestionReceiptIssued.v1")
        receipt = upgraded.store.issued_receipt(UUID(kept.aggregate_id))
        assert receipt is not None
        assert (receipt.partner_event_id, receipt.principal, receipt.request_fingerprint) == (
            kept.fields["partner_event_id"], kept.fields["principal"],
            kept.fields["request_fingerprint"])
        assert UUID(kept.aggregate_id) in upgraded.store.stored_receipts([UUID(kept.aggregate_id)])
        # The same event id with another meaning is refused on the old receipt.
        with pytest.raises(IdempotencyConflict):
            record(upgraded.service, firm_body("another-meaning") | {
                "event_id": receipt.partner_event_id}, by=receipt.principal)

    def test_tampering_with_an_old_event_is_still_found(self, upgraded: Audited) -> None:
        target = upgraded.events()[100]
        upgraded.flip_a_payload_byte(target.position)
        first = upgraded.verify().first_failure
        assert first is not None and first.position == target.position


class TestOnSQLite(UpgradeContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        unpack_fixture(tmp_path / "data")
        return Settings(data_dir=tmp_path / "data", database_url=None)


class TestOnPostgreSQL(UpgradeContract):
    @pytest.fixture
    def settings(self, postgres_url: str, tmp_path: Path) -> Settings:
        fixture = unpack_fixture(tmp_path / "fixture")
        settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
        copy_into_postgres(fixture, settings)
        return settings
