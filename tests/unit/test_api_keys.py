"""API keys: stored as digests, resolved to a principal, remembered for a short while."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select

from services.shared.api_keys import ApiKeyStore, Principal, Role, api_keys, digest
from services.shared.database import create_sql_engine


def store_in(tmp_path: Path, cache_seconds: float) -> ApiKeyStore:
    store = ApiKeyStore(create_sql_engine(f"sqlite:///{tmp_path / 'keys.db'}"), cache_seconds)
    store.create_schema()
    return store


def test_only_the_digest_is_stored(tmp_path: Path) -> None:
    store = store_in(tmp_path, 30)
    key = store.create("tata-erp", Role.PARTNER)
    with store.engine.connect() as conn:
        stored = conn.execute(select(api_keys.c.digest)).scalars().all()
    assert stored == [digest(key)] and key not in stored
    assert store.resolve(key) == Principal("tata-erp", Role.PARTNER)
    assert store.resolve(key + "x") is None


def test_resolved_keys_are_remembered_for_the_cache_period_only(tmp_path: Path) -> None:
    remembering, forgetting = store_in(tmp_path, 30), store_in(tmp_path, 0)
    key = remembering.create("dash", Role.READER)
    assert remembering.resolve(key) is not None and forgetting.resolve(key) is not None
    with remembering.engine.begin() as conn:
        conn.execute(delete(api_keys))
    assert remembering.resolve(key) == Principal("dash", Role.READER)
    assert forgetting.resolve(key) is None
