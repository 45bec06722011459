"""Signed tree heads and RFC 9162 proofs over HTTP, checked the way an auditor's own code
would: every head's signature with the published key, every proof with the RFC's verifier
(services.registry.audit.merkle, itself checked against the CT test vectors), and
`verify-consistency --url` against a kept head."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.cli import main
from services.registry.audit import consistency_check
from services.registry.audit.merkle import verify_consistency, verify_inclusion
from services.registry.audit.signing import SignedTreeHead, load_public_key, verify_tree_head
from services.registry.service import create_registry_app
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.unit.registry.support import firm_body

pytestmark = pytest.mark.integration


class Auditor:
    def __init__(self, client: TestClient, keys: dict[Role, str]) -> None:
        self.client = client
        self.keys = keys

    def get(self, path: str, role: Role = Role.READER, **params: Any) -> Any:
        return self.client.get(path, params=params,
                               headers={"Authorization": f"Bearer {self.keys[role]}"})

    def record_firm(self, code: str) -> dict[str, Any]:
        answer = self.client.post("/v1/events", json=firm_body(code, "IN", "recycler"),
                                  headers={"Authorization": f"Bearer {self.keys[Role.PARTNER]}"})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def head_covering(self, tree_size: int) -> SignedTreeHead:
        # The write's own wake-up has the follower cover it; poll the observable head.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            head = SignedTreeHead.from_dict(self.get("/v1/audit/tree-head").json())
            if head.tree_size >= tree_size:
                return head
            time.sleep(0.01)
        raise AssertionError(f"no signed head reached {tree_size}")


@pytest.fixture
def auditor(tmp_path: Path) -> Iterator[Auditor]:
    app = create_registry_app(Settings(data_dir=tmp_path, database_url=None))
    with TestClient(app) as client:
        keys = {role: app.state.api_keys.create(f"k-{role.value}", role) for role in Role}
        yield Auditor(client, keys)


def test_heads_are_signed_with_the_published_key(auditor: Auditor) -> None:
    published = auditor.client.get("/v1/audit/public-key").json()  # no key needed
    public_key = load_public_key(published["public_key_pem"])
    receipt = auditor.record_firm("attero")
    head = auditor.head_covering(receipt["tree_size"])
    assert head.key_id == published["key_id"]
    assert verify_tree_head(head, public_key)
    forged = SignedTreeHead(**{**head.__dict__, "tree_size": head.tree_size + 1})
    assert not verify_tree_head(forged, public_key)
    assert auditor.client.get("/v1/audit/tree-head").status_code == 401


def test_every_receipt_is_proven_in_a_signed_head(auditor: Auditor) -> None:
    receipts = [auditor.record_firm(f"firm-{n}") for n in range(20)]
    sizes = [r["tree_size"] for r in receipts]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    head = auditor.head_covering(sizes[-1])
    root = bytes.fromhex(head.root_hash)
    for receipt in receipts:
        for tree_size in (receipt["tree_size"], head.tree_size):
            proof = auditor.get("/v1/audit/proof/inclusion", position=receipt["position"],
                                tree_size=tree_size).json()
            assert proof["leaf_index"] == receipt["tree_size"] - 1
            path = [bytes.fromhex(h) for h in proof["audit_path"]]
            leaf = bytes.fromhex(proof["leaf_hash"])
            assert verify_inclusion(proof["leaf_index"], tree_size, leaf, path,
                                    bytes.fromhex(proof["root_hash"]))
            if tree_size == head.tree_size:
                assert verify_inclusion(proof["leaf_index"], tree_size, leaf, path, root)


def test_a_later_head_is_proven_to_extend_a_kept_one(auditor: Auditor, tmp_path: Path,
                                                     capsys: Any) -> None:
    kept = auditor.head_covering(auditor.record_firm("attero")["tree_size"])
    for n in range(9):
        auditor.record_firm(f"later-{n}")
    later = auditor.head_covering(kept.tree_size + 9)
    proof = auditor.get("/v1/audit/proof/consistency", first=kept.tree_size,
                        second=later.tree_size).json()
    path = [bytes.fromhex(h) for h in proof["consistency_path"]]
    assert verify_consistency(kept.tree_size, later.tree_size, bytes.fromhex(kept.root_hash),
                              bytes.fromhex(later.root_hash), path)
    assert not verify_consistency(kept.tree_size, later.tree_size, bytes(32),
                                  bytes.fromhex(later.root_hash), path)

    check = consistency_check.against_service("", auditor.keys[Role.READER], kept,
                                              client=auditor.client)
    assert check.ok, check.message
    forged = SignedTreeHead(**{**kept.__dict__, "root_hash": "ab" * 32})
    refused = consistency_check.against_service("", auditor.keys[Role.READER], forged,
                                                client=auditor.client)
    assert not refused.ok and "signature" in refused.message


@pytest.mark.parametrize(("path", "params", "field", "rule"), [
    ("/v1/audit/proof/inclusion", {"position": 999}, "position", "covered_position"),
    ("/v1/audit/proof/inclusion", {"position": 2, "tree_size": 1}, "tree_size",
     "includes_position"),
    ("/v1/audit/proof/inclusion", {"position": 2, "tree_size": 99}, "tree_size",
     "at_most_signed_tree_size"),
    ("/v1/audit/proof/consistency", {"first": 3, "second": 2}, "first", "at_most_second"),
    ("/v1/audit/proof/consistency", {"first": 1, "second": 99}, "second",
     "at_most_signed_tree_size"),
    ("/v1/audit/proof/consistency", {"first": 0, "second": 2}, "first", None),
])
def test_a_proof_that_cannot_be_given_is_a_precise_422(
        auditor: Auditor, path: str, params: dict[str, int], field: str,
        rule: str | None) -> None:
    auditor.record_firm("attero")
    auditor.head_covering(auditor.record_firm("lohum")["tree_size"])
    answer = auditor.get(path, **params)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert field in (error["field"] or "")
    if rule is not None:
        assert error["rule"] == rule


def test_verify_consistency_cli_over_http(auditor: Auditor, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: Any) -> None:
    kept = auditor.head_covering(auditor.record_firm("attero")["tree_size"])
    head_file = tmp_path / "head.json"
    head_file.write_text(json.dumps(kept.as_dict()))
    auditor.record_firm("lohum")
    # The CLI's own HTTP client, pointed at the in-process app.
    monkeypatch.setattr(consistency_check.httpx, "Client",
                        lambda **_: _Unclosed(auditor.client))
    assert main(["audit", "verify-consistency", str(head_file), "--url", "http://registry",
                 "--api-key", auditor.keys[Role.READER]]) == 0
    assert "OK" in capsys.readouterr().out
    head_file.write_text(json.dumps({**kept.as_dict(), "tree_size": kept.tree_size + 1}))
    assert main(["audit", "verify-consistency", str(head_file), "--url", "http://registry",
                 "--api-key", auditor.keys[Role.READER]]) == 1
    assert "signature does not verify" in capsys.readouterr().err


class _Unclosed:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.get(*args, **kwargs)

    def close(self) -> None:
        """The test's client outlives the CLI's call."""


def test_a_batchs_receipts_each_name_their_own_tree_size(auditor: Auditor) -> None:
    auditor.head_covering(auditor.record_firm("attero")["tree_size"])  # a known head first
    answer = auditor.client.post(
        "/v1/events/batch", json=[firm_body(f"batch-{n}", "IN", "recycler") for n in range(12)],
        headers={"Authorization": f"Bearer {auditor.keys[Role.PARTNER]}"})
    assert answer.status_code == 200, answer.text
    receipts = [item["receipt"] for item in answer.json()["items"]]
    head = auditor.head_covering(max(r["tree_size"] for r in receipts))
    for receipt in receipts:
        proof = auditor.get("/v1/audit/proof/inclusion", position=receipt["position"],
                            tree_size=head.tree_size).json()
        assert receipt["tree_size"] == proof["leaf_index"] + 1


def test_a_retried_batch_names_the_tree_sizes_of_its_first_answer(auditor: Auditor) -> None:
    headers = {"Authorization": f"Bearer {auditor.keys[Role.PARTNER]}"}
    firms = [firm_body(f"retry-{n}", "IN", "recycler") for n in range(6)]
    first = auditor.client.post("/v1/events/batch", json=firms, headers=headers)
    assert first.status_code == 200, first.text
    sizes = [item["receipt"]["tree_size"] for item in first.json()["items"]]
    auditor.head_covering(max(sizes))  # the follower's head now covers the first answers
    more = [firm_body(f"retry-late-{n}", "IN", "recycler") for n in range(3)]
    again = auditor.client.post("/v1/events/batch", json=firms + more, headers=headers)
    assert again.status_code == 200, again.text
    receipts = [item["receipt"] for item in again.json()["items"]]
    assert [r["replayed"] for r in receipts] == [True] * 6 + [False] * 3
    assert [r["tree_size"] for r in receipts[:6]] == sizes
    head = auditor.head_covering(max(r["tree_size"] for r in receipts))
    for receipt in receipts:
        proof = auditor.get("/v1/audit/proof/inclusion", position=receipt["position"],
                            tree_size=head.tree_size).json()
        assert receipt["tree_size"] == proof["leaf_index"] + 1
