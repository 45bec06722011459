"""Key lifecycles in the key store, on SQLite and PostgreSQL: firms, expiry, revocation seen
by another instance, rotation's grace period, the last use, the key administration log and
the upgrade of a keys table made before all of these."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, insert, inspect, select

from services.shared.api_keys import (
    ApiKeyStore,
    InvalidKeyRequest,
    KeyAction,
    KeyConflict,
    KeyState,
    Principal,
    Role,
    UnknownKey,
    api_keys,
    digest,
)
from services.shared.database import create_sql_engine
from services.shared.settings import sqlalchemy_url

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# Generous: the documented bound is REVOCATION_BOUND_SECONDS; this only stops a broken test.
GIVE_UP_SECONDS = 30.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        url = sqlalchemy_url(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = create_sql_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def store_on(engine: Engine, clock: Clock, cache_seconds: float = 30.0) -> ApiKeyStore:
    store = ApiKeyStore(engine, cache_seconds, clock=clock)
    store.create_schema()
    return store


def test_a_key_carries_its_firms_into_its_principal(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock)
    key = store.create("tata-erp", Role.PARTNER, ["tata-motors", "tata-autocomp", "tata-motors"])
    assert store.resolve(key) == Principal("tata-erp", Role.PARTNER,
                                           frozenset({"tata-motors", "tata-autocomp"}))
    assert store.key("tata-erp").firms == ("tata-autocomp", "tata-motors")


def test_an_expired_key_is_refused_even_while_remembered(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock)
    key = store.create("dash", Role.READER, expires_at=START + timedelta(days=1))
    assert store.resolve(key) is not None and store.remembered(key) is not None
    clock.advance(timedelta(days=1))
    assert store.remembered(key) is None
    assert store.resolve(key) is None
    assert store.key("dash").state(clock()) is KeyState.EXPIRED


def test_a_revoked_key_is_refused_by_another_instance_within_the_bound(
        engine: Engine, clock: Clock) -> None:
    here = store_on(engine, clock)
    elsewhere = ApiKeyStore(engine, clock=clock)  # the default cache: the documented bound
    key = here.create("dash", Role.READER)
    assert elsewhere.resolve(key) is not None  # now remembered there
    here.revoke("dash", actor="test")
    assert here.resolve(key) is None  # the revoking instance forgets at once
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while elsewhere.resolve(key) is not None:
        assert time.monotonic() < give_up, "the other instance still accepts a revoked key"
        time.sleep(0.05)
    assert elsewhere.current_principal(digest(key)) is None


def test_a_rotated_key_works_during_its_grace_period_only(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock, cache_seconds=0)
    old = store.create("tata-erp", Role.PARTNER, ["tata-motors"])
    new = store.rotate("tata-erp", "test", grace=timedelta(hours=1))
    principal = Principal("tata-erp", Role.PARTNER, frozenset({"tata-motors"}))
    assert store.resolve(old) == principal and store.resolve(new) == principal
    clock.advance(timedelta(minutes=59))
    assert store.resolve(old) == principal
    clock.advance(timedelta(minutes=1))
    assert store.resolve(old) is None
    assert store.resolve(new) == principal


def test_a_grace_of_zero_ends_the_old_key_at_once(engine: Engine, clock: Clock) -> None:
    remembering = store_on(engine, clock, cache_seconds=30)
    old = remembering.create("dash", Role.READER)
    assert remembering.resolve(old) is not None
    new = remembering.rotate("dash", "test", grace=timedelta(0))
    assert remembering.resolve(old) is None
    assert remembering.resolve(new) is not None


def test_a_second_rotation_ends_the_first_ones_old_key(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock, cache_seconds=0)
    first = store.create("dash", Role.READER)
    second = store.rotate("dash", "test", grace=timedelta(hours=1))
    third = store.rotate("dash", "test", grace=timedelta(hours=1))
    assert store.resolve(first) is None
    assert store.resolve(second) is not None and store.resolve(third) is not None


def test_revoking_also_ends_the_key_in_its_grace_period(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock, cache_seconds=0)
    old = store.create("dash", Role.READER)
    new = store.rotate("dash", "test", grace=timedelta(hours=1))
    store.revoke("dash", "test")
    assert store.resolve(old) is None and store.resolve(new) is None
    assert store.key("dash").state(clock()) is KeyState.REVOKED


def test_binding_firms_changes_the_principal_at_once(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock)
    key = store.create("tata-erp", Role.PARTNER)
    assert store.resolve(key) == Principal("tata-erp", Role.PARTNER)
    store.bind_firms("tata-erp", ["tata-motors"], "test")
    assert store.resolve(key) == Principal("tata-erp", Role.PARTNER, frozenset({"tata-motors"}))
    store.bind_firms("tata-erp", [], "test")
    assert store.resolve(key) == Principal("tata-erp", Role.PARTNER)


def test_the_last_use_is_written_at_most_once_a_minute(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock, cache_seconds=0)
    key = store.create("dash", Role.READER)
    assert store.key("dash").last_used_at is None
    store.resolve(key)
    assert store.key("dash").last_used_at == START
    clock.advance(timedelta(seconds=59))
    store.resolve(key)
    assert store.key("dash").last_used_at == START
    clock.advance(timedelta(seconds=1))
    store.resolve(key)
    assert store.key("dash").last_used_at == START + timedelta(seconds=60)


def test_the_administration_log_names_who_did_what(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock)
    store.create("tata-erp", Role.PARTNER, ["tata-motors"], START + timedelta(days=30),
                 actor="cli:ops")
    clock.advance(timedelta(minutes=1))
    store.bind_firms("tata-erp", ["tata-motors", "tata-autocomp"], actor="root-admin")
    store.rotate("tata-erp", "root-admin", grace=timedelta(hours=2))
    store.create("dash", Role.READER, actor="root-admin")
    store.revoke("tata-erp", actor="cli:ops")
    events, total = store.events(limit=10, offset=0)
    assert total == 5
    assert [(e.action, e.key_name, e.actor) for e in events] == [
        (KeyAction.CREATED, "tata-erp", "cli:ops"),
        (KeyAction.FIRMS_BOUND, "tata-erp", "root-admin"),
        (KeyAction.ROTATED, "tata-erp", "root-admin"),
        (KeyAction.CREATED, "dash", "root-admin"),
        (KeyAction.REVOKED, "tata-erp", "cli:ops"),
    ]
    assert events[0].at == START and events[0].expires_at == START + timedelta(days=30)
    assert events[1].firms == ("tata-autocomp", "tata-motors")
    assert events[2].grace_until == START + timedelta(minutes=1, hours=2)
    only_dash, dash_total = store.events(limit=10, offset=0, key_name="dash")
    assert dash_total == 1 and only_dash[0].role is Role.READER
    page, _ = store.events(limit=2, offset=2)
    assert [e.id for e in page] == [events[2].id, events[3].id]


def test_refusals_name_the_field_and_the_rule(engine: Engine, clock: Clock) -> None:
    store = store_on(engine, clock)
    store.create("dash", Role.READER, expires_at=START + timedelta(hours=1))
    refusals: list[tuple[type[Exception], str, object]] = [
        (UnknownKey, "known_key", lambda: store.revoke("nobody", "test")),
        (KeyConflict, "unique_name", lambda: store.create("dash", Role.ADMIN)),
        (InvalidKeyRequest, "key_name", lambda: store.create("bad name", Role.READER)),
        (InvalidKeyRequest, "key_name", lambda: store.create("x" * 101, Role.READER)),
        (InvalidKeyRequest, "firm_code", lambda: store.create("p", Role.PARTNER, ["Tata"])),
        (InvalidKeyRequest, "future", lambda: store.create("p", Role.PARTNER,
                                                           expires_at=START)),
        (InvalidKeyRequest, "max_lifetime", lambda: store.create(
            "p", Role.PARTNER, expires_at=START + timedelta(days=4000))),
        (InvalidKeyRequest, "max_grace", lambda: store.rotate(
            "dash", "test", grace=timedelta(days=31))),
    ]
    for kind, rule, attempt in refusals:
        with pytest.raises(kind) as refused:
            attempt()  # type: ignore[operator]
        assert refused.value.rule == rule  # type: ignore[attr-defined]
    clock.advance(timedelta(hours=1))
    with pytest.raises(KeyConflict, match="expired") as expired:
        store.rotate("dash", "test")
    assert expired.value.rule == "not_expired"
    renewed = store.rotate("dash", "test", expires_at=clock() + timedelta(days=1))
    assert store.resolve(renewed) == Principal("dash", Role.READER)
    store.revoke("dash", "test")
    for change in (lambda: store.revoke("dash", "test"), lambda: store.rotate("dash", "test"),
                   lambda: store.bind_firms("dash", [], "test")):
        with pytest.raises(KeyConflict) as revoked:
            change()
        assert revoked.value.rule == "not_revoked"
    assert store.count() == 1  # nothing refused was stored


OLD_TABLES = MetaData()
OLD_KEYS = Table(  # dealreg_api_keys as it was before key lifecycles
    "dealreg_api_keys", OLD_TABLES,
    Column("digest", String(64), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def test_an_older_keys_table_is_upgraded_in_place(engine: Engine, clock: Clock) -> None:
    OLD_TABLES.create_all(engine)
    old_key = "drk_" + "a" * 43
    with engine.begin() as conn:
        conn.execute(insert(OLD_KEYS).values(digest=digest(old_key), name="legacy-erp",
                                             role="partner", created_at=START))
    store = store_on(engine, clock)
    store.create_schema()  # twice: every instance upgrades at start
    columns = {column["name"] for column in inspect(engine).get_columns("dealreg_api_keys")}
    assert {"firms", "expires_at", "revoked_at", "last_used_at", "previous_digest"} <= columns
    assert store.resolve(old_key) == Principal("legacy-erp", Role.PARTNER)
    record = store.key("legacy-erp")
    assert record.firms == () and record.expires_at is None
    assert record.state(clock()) is KeyState.ACTIVE
    # How an admin binds firms to a key made before keys had firms.
    store.bind_firms("legacy-erp", ["tata-motors"], actor="cli:ops")
    assert store.resolve(old_key) == Principal("legacy-erp", Role.PARTNER,
                                               frozenset({"tata-motors"}))
    with engine.connect() as conn:
        assert conn.execute(select(api_keys.c.firms)).scalar_one() == '["tata-motors"]'
