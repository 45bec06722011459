"""`dealreg keys create | list | revoke | rotate | bind` on a SQLite data folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.cli import main
from services.shared.api_keys import ApiKeyStore, KeyAction, Principal, Role
from services.shared.database import create_sql_engine

pytestmark = pytest.mark.integration


def dealreg(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


def store_of(data: Path) -> ApiKeyStore:
    return ApiKeyStore(create_sql_engine(f"sqlite:///{data / 'registry.db'}"), cache_seconds=0)


def listed(capsys: pytest.CaptureFixture[str], data: Path) -> dict[str, Any]:
    code, out, _ = dealreg(capsys, data, "keys", "list", "--json")
    assert code == 0
    return {key["name"]: key for key in json.loads(out)}


def test_create_with_firms_and_expiry_then_list(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    next_year = (datetime.now(UTC) + timedelta(days=400)).date().isoformat()
    code, out, _ = dealreg(capsys, tmp_path, "keys", "create", "--role", "partner", "--name",
                           "tata-erp", "--firm", "tata-motors", "--firm", "tata-autocomp",
                           "--expires", next_year)
    key = out.strip().splitlines()[-1]
    assert code == 0 and key.startswith("drk_")
    assert store_of(tmp_path).resolve(key) == Principal(
        "tata-erp", Role.PARTNER, frozenset({"tata-motors", "tata-autocomp"}))
    tata = listed(capsys, tmp_path)["tata-erp"]
    assert tata["firms"] == ["tata-autocomp", "tata-motors"] and tata["state"] == "active"
    assert tata["expires_at"] == f"{next_year}T00:00:00+00:00" and tata["last_used_at"]
    assert key not in json.dumps(tata)
    code, out, _ = dealreg(capsys, tmp_path, "keys", "list")
    assert code == 0 and "tata-autocomp,tata-motors" in out and key not in out
    code, _, _ = dealreg(capsys, tmp_path, "keys", "create", "--role", "reader", "--name",
                         "dash", "--expires", "30d")
    assert code == 0 and listed(capsys, tmp_path)["dash"]["expires_at"] is not None


def test_revoke_rotate_and_bind(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, out, _ = dealreg(capsys, tmp_path, "keys", "create", "--role", "reader", "--name", "dash")
    old = out.strip().splitlines()[-1]
    code, out, _ = dealreg(capsys, tmp_path, "keys", "rotate", "dash", "--grace", "1h")
    new = out.strip().splitlines()[-1]
    store = store_of(tmp_path)
    assert code == 0 and new != old and store.resolve(old) and store.resolve(new)
    code, out, _ = dealreg(capsys, tmp_path, "keys", "rotate", "dash", "--grace", "0s")
    newest = out.strip().splitlines()[-1]
    assert store.resolve(new) is None and store.resolve(newest) is not None
    code, out, _ = dealreg(capsys, tmp_path, "keys", "bind", "dash", "--firm", "tata-motors")
    assert code == 0 and "tata-motors" in out
    assert store.resolve(newest) == Principal("dash", Role.READER, frozenset({"tata-motors"}))
    code, out, _ = dealreg(capsys, tmp_path, "keys", "revoke", "dash")
    assert code == 0 and store.resolve(newest) is None
    assert listed(capsys, tmp_path)["dash"]["state"] == "revoked"
    events, _ = store.events(limit=10, offset=0)
    assert [e.action for e in events] == [KeyAction.CREATED, KeyAction.ROTATED,
                                          KeyAction.ROTATED, KeyAction.FIRMS_BOUND,
                                          KeyAction.REVOKED]
    assert all(e.actor.startswith("cli:") for e in events)


@pytest.mark.parametrize("argv", [
    ("keys", "revoke", "nobody"),
    ("keys", "rotate", "nobody"),
    ("keys", "bind", "nobody", "--firm", "tata-motors"),
    ("keys", "create", "--role", "reader", "--name", "has space"),
    ("keys", "create", "--role", "partner", "--name", "p", "--firm", "Tata"),
    ("keys", "create", "--role", "reader", "--name", "p", "--expires", "2000-01-01"),
])
def test_refusals_exit_2_and_say_why(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     argv: tuple[str, ...]) -> None:
    code, _, err = dealreg(capsys, tmp_path, *argv)
    assert code == 2 and err.startswith("error: ")


@pytest.mark.parametrize("argv", [
    ("keys", "create", "--role", "reader", "--name", "p", "--expires", "soon"),
    ("keys", "create", "--role", "reader", "--name", "p", "--expires", "9999999d"),
    ("keys", "rotate", "p", "--grace", "-1h"),
])
def test_unreadable_arguments_are_usage_errors(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as usage:
        dealreg(capsys, tmp_path, *argv)
    assert usage.value.code == 2
