"""Key administration over HTTP: admin-only changes, the auditors' log of them, refusals in
the one error format, and a revocation through one instance seen by another."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.registry.service import create_registry_app
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.integration.test_http_api import Registry

pytestmark = pytest.mark.integration

GIVE_UP_SECONDS = 30.0  # generous: the documented bound is a couple of seconds


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    running = Registry(Settings(data_dir=tmp_path / "data"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    running = Registry(Settings(data_dir=tmp_path_factory.mktemp("keys") / "data"))
    yield running
    running.close()


@pytest.fixture
def refusing_registry(shared_registry: Registry) -> Iterator[Registry]:
    """The module's registry, for a test whose requests are all refused: afterwards the keys
    and their log are as they were (else the test errors), so the next such test finds
    them as a registry of its own would."""
    before = keys_and_log(shared_registry)
    yield shared_registry
    assert keys_and_log(shared_registry) == before, "a refused request changed the keys"


def keys_and_log(registry: Registry) -> tuple[Any, Any]:
    keys = admin(registry, "GET", "/v1/keys", params={"limit": 100}).json()
    for key in keys["items"]:
        key.pop("last_used_at")  # the admin key is used by the asking itself
    log = admin(registry, "GET", "/v1/audit/key-events", Role.AUDITOR,
                params={"limit": 100}).json()
    return keys, log


def admin(registry: Registry, method: str, path: str, role: Role = Role.ADMIN,
          **kw: Any) -> Any:
    return registry.client.request(method, path, headers=registry.headers(role), **kw)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["status"] == status
    return error


def test_only_admins_change_keys_and_auditors_read_the_log(registry: Registry) -> None:
    changes = [("GET", "/v1/keys", None), ("POST", "/v1/keys", {"name": "x", "role": "reader"}),
               ("POST", "/v1/keys/test-reader/revoke", None),
               ("POST", "/v1/keys/test-reader/rotate", None),
               ("PUT", "/v1/keys/test-partner/firms", {"firms": []})]
    for role in (Role.PARTNER, Role.READER, Role.AUDITOR):
        for method, path, body in changes:
            error = error_of(admin(registry, method, path, role, json=body), 403)
            assert error["rule"] == "role"
    assert error_of(registry.client.get("/v1/keys"), 401)["rule"] == "required"
    assert admin(registry, "GET", "/v1/audit/key-events", Role.AUDITOR).status_code == 200
    assert error_of(admin(registry, "GET", "/v1/audit/key-events", Role.READER), 403)
    assert registry.client.get("/v1/keys/test-reader").status_code in (404, 405)


def test_a_created_key_is_answered_once_and_listed_without_it(registry: Registry) -> None:
    created = admin(registry, "POST", "/v1/keys", json={
        "name": "tata-erp", "role": "partner", "firms": ["tata-motors", "tata-autocomp"],
        "expires_in_seconds": 86400})
    assert created.status_code == 201, created.text
    answer = created.json()
    assert answer["firms"] == ["tata-autocomp", "tata-motors"] and answer["state"] == "active"
    assert answer["expires_at"] is not None and answer["key"].startswith("drk_")
    assert admin(registry, "GET", "/v1/deals", Role.READER).status_code == 200
    assert registry.client.get("/v1/deals", headers=bearer(answer["key"])).status_code == 200
    listed = admin(registry, "GET", "/v1/keys", params={"limit": 2, "offset": 0}).json()
    assert listed["total"] == 5 and listed["limit"] == 2 and len(listed["items"]) == 2
    everything = admin(registry, "GET", "/v1/keys").json()["items"]
    tata = next(item for item in everything if item["name"] == "tata-erp")
    assert "key" not in tata and tata["role"] == "partner" and tata["last_used_at"] is not None
    assert answer["key"] not in str(everything)
    taken = admin(registry, "POST", "/v1/keys", json={"name": "tata-erp", "role": "reader"})
    assert error_of(taken, 409)["rule"] == "unique_name"


def test_a_revoked_key_is_refused_and_cannot_be_revoked_again(registry: Registry) -> None:
    key = admin(registry, "POST", "/v1/keys", json={"name": "dash", "role": "reader"}).json()
    assert registry.client.get("/v1/deals", headers=bearer(key["key"])).status_code == 200
    revoked = admin(registry, "POST", "/v1/keys/dash/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    # The revoking instance forgets the key at once; others within the bound.
    refused = registry.client.get("/v1/deals", headers=bearer(key["key"]))
    assert error_of(refused, 401)["rule"] == "known_key"
    again = admin(registry, "POST", "/v1/keys/dash/revoke")
    assert error_of(again, 409) == {**error_of(again, 409), "field": "name",
                                    "rule": "not_revoked"}
    unknown = admin(registry, "POST", "/v1/keys/nobody/revoke")
    assert error_of(unknown, 404)["rule"] == "known_key"


def test_a_rotated_key_answers_its_successor_and_keeps_the_old_for_the_grace(
        registry: Registry) -> None:
    old = registry.keys[Role.READER]
    rotated = admin(registry, "POST", "/v1/keys/test-reader/rotate",
                    json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["key"]
    assert rotated.json()["previous_key_valid_until"] is not None
    for key in (old, new):
        assert registry.client.get("/v1/deals", headers=bearer(key)).status_code == 200
    at_once = admin(registry, "POST", "/v1/keys/test-reader/rotate", json={"grace_seconds": 0})
    newest = at_once.json()["key"]
    assert registry.client.get("/v1/deals", headers=bearer(new)).status_code == 401
    assert registry.client.get("/v1/deals", headers=bearer(old)).status_code == 401
    assert registry.client.get("/v1/deals", headers=bearer(newest)).status_code == 200
    # With no body, the grace period is the default hour.
    assert admin(registry, "POST", "/v1/keys/test-reader/rotate").status_code == 200
    assert registry.client.get("/v1/deals", headers=bearer(newest)).status_code == 200


def test_binding_firms_and_the_log_of_who_did_it(registry: Registry) -> None:
    bound = admin(registry, "PUT", "/v1/keys/test-partner/firms",
                  json={"firms": ["tata-motors", "tata-autocomp"]})
    assert bound.status_code == 200 and bound.json()["firms"] == ["tata-autocomp", "tata-motors"]
    assert registry.app.state.api_keys.resolve(registry.keys[Role.PARTNER]).firms == \
        frozenset({"tata-motors", "tata-autocomp"})
    admin(registry, "POST", "/v1/keys", json={"name": "dash", "role": "reader"})
    admin(registry, "POST", "/v1/keys/dash/rotate", json={"grace_seconds": 60})
    admin(registry, "POST", "/v1/keys/dash/revoke")
    log = admin(registry, "GET", "/v1/audit/key-events", Role.AUDITOR).json()
    mine = [(e["action"], e["key_name"], e["actor"]) for e in log["items"]
            if e["actor"] == "test-admin"]
    assert mine == [("firms_bound", "test-partner", "test-admin"),
                    ("created", "dash", "test-admin"), ("rotated", "dash", "test-admin"),
                    ("revoked", "dash", "test-admin")]
    assert log["total"] == 4 + 4  # the four keys the fixture made, then these
    dash = admin(registry, "GET", "/v1/audit/key-events", Role.AUDITOR,
                 params={"key_name": "dash", "limit": 1, "offset": 1}).json()
    assert dash["total"] == 3 and [e["action"] for e in dash["items"]] == ["rotated"]
    assert dash["items"][0]["grace_until"] is not None


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({"name": "bad name", "role": "reader"}, "name", "string_pattern_mismatch"),
    ({"name": "x" * 5000, "role": "reader"}, "name", "string_too_long"),
    ({"name": "tâta", "role": "reader"}, "name", "string_pattern_mismatch"),
    ({"name": "p", "role": "owner"}, "role", "enum"),
    ({"name": "p", "role": "partner", "firms": ["Tata Motors"]}, "firms.0",
     "string_pattern_mismatch"),
    ({"name": "p", "role": "partner", "firms": ["f" * 10_000]}, "firms.0", "string_too_long"),
    ({"name": "p", "role": "partner", "firms": [f"firm-{n:03}" for n in range(101)]}, "firms",
     "too_long"),
    ({"name": "p", "role": "reader", "expires_in_seconds": 0}, "expires_in_seconds",
     "greater_than_equal"),
    ({"name": "p", "role": "reader", "expires_in_seconds": 10**30}, "expires_in_seconds",
     "less_than_equal"),
    ({"name": "p", "role": "reader", "key": "drk_mine"}, "key", "extra_forbidden"),
])
def test_a_bad_creation_is_refused_naming_field_and_rule(
        refusing_registry: Registry, body: dict[str, Any], field: str, rule: str) -> None:
    error = error_of(admin(refusing_registry, "POST", "/v1/keys", json=body), 422)
    assert (error["field"], error["rule"]) == (field, rule)


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/v1/keys/%20bad/revoke", None, "name"),
    ("POST", "/v1/keys/" + "n" * 300 + "/rotate", None, "name"),
    ("POST", "/v1/keys/test-reader/rotate", {"grace_seconds": -1}, "grace_seconds"),
    ("POST", "/v1/keys/test-reader/rotate", {"grace_seconds": 10**12}, "grace_seconds"),
    ("PUT", "/v1/keys/test-partner/firms", {"firms": "tata-motors"}, "firms"),
    ("PUT", "/v1/keys/test-partner/firms", {}, "firms"),
    ("GET", "/v1/audit/key-events?key_name=a%00b", None, "key_name"),
    ("GET", "/v1/keys?limit=0", None, "limit"),
])
def test_a_bad_change_is_refused_naming_the_field(
        refusing_registry: Registry, method: str, path: str, body: Any, field: str) -> None:
    assert error_of(admin(refusing_registry, method, path, json=body), 422)["field"] == field


def test_the_operations_are_in_the_openapi_document(refusing_registry: Registry) -> None:
    paths = refusing_registry.client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/keys"]) == {"get", "post"}
    assert "201" in paths["/v1/keys"]["post"]["responses"]
    for path in ("/v1/keys/{name}/revoke", "/v1/keys/{name}/rotate"):
        assert {"404", "409", "422"} <= set(paths[path]["post"]["responses"])
    assert "put" in paths["/v1/keys/{name}/firms"]
    assert "403" in paths["/v1/audit/key-events"]["get"]["responses"]


def test_a_revocation_through_one_instance_is_seen_by_another(
        postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=postgres_url)
    with TestClient(create_registry_app(settings)) as here, \
            TestClient(create_registry_app(settings)) as there:
        keys = here.app.state.api_keys  # type: ignore[attr-defined]
        root = bearer(keys.create("root-admin", Role.ADMIN))
        ops = bearer(keys.create("ops-admin", Role.ADMIN))
        assert there.get("/v1/keys", headers=ops).status_code == 200  # remembered there
        assert here.post("/v1/keys/ops-admin/revoke", headers=root).status_code == 200
        give_up = time.monotonic() + GIVE_UP_SECONDS
        while (answer := there.get("/v1/keys", headers=ops)).status_code != 401:
            assert answer.status_code == 200, answer.text
            assert time.monotonic() < give_up, "the other instance still accepts the key"
            time.sleep(0.05)
        assert answer.json()["error"]["rule"] == "known_key"
        assert there.get("/v1/keys", headers=root).status_code == 200


def test_revoking_a_key_ends_its_browser_sessions(registry: Registry) -> None:
    from tests.integration.test_pages import sign_in

    sign_in(registry, Role.READER)
    assert registry.client.get("/deals", follow_redirects=False).status_code == 200
    assert admin(registry, "POST", "/v1/keys/test-reader/revoke").status_code == 200
    assert registry.client.get("/deals", follow_redirects=False).status_code == 303
