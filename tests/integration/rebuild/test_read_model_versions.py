"""Read-model versions (issue 13, item 5), on SQLite files and on PostgreSQL: a read model
built by an older version of the code (emulated: a column of a table dropped, the stored
version set to READ_MODEL_VERSION - 1 or its row removed) is rebuilt in the code's version by
`dealreg projections rebuild --version N` and switched to whatever the shapes; a wrong
version is refused; `dealreg projections` does not start on another version; `dealreg up`
rebuilds by itself while it serves (reads 503 until the switch, /readyz says so).

Nothing here names a version by number: "the code's" is READ_MODEL_VERSION, "older" is
READ_MODEL_VERSION - 1, "newer" READ_MODEL_VERSION + 1."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, inspect, select, update

from services import cli
from services.cli import main
from services.demo.scenario import scenario
from services.embedded import projection_feed
from services.embedded.app import create_embedded_app
from services.projections.read_model.tables import (
    READ_MODEL_PROJECTOR,
    READ_MODEL_VERSION,
    UNVERSIONED_READ_MODEL,
    create_read_schema,
    pledges,
    read_model_version,
    stored_read_model_version,
)
from services.projections.rebuild.rebuild import ReadModelVersionRefused
from services.shared.database import create_sql_engine
from services.shared.settings import Settings
from tests.integration.rebuild.test_rebuild_from_log import (
    Installation,
    assert_no_rebuild_left,
    checksum_lines,
    installed,
)
from tests.integration.test_http_api import Registry

pytestmark = pytest.mark.integration
EVENTS = 200
OLDER = READ_MODEL_VERSION - 1


def droppable_column() -> str:
    """A column of `rm_pledges` that SQLite can drop (in no key and no index): the one an
    older version of the read model lacked, for these tests. The last such column, so a
    column a newer version adds at the end is the one dropped."""
    indexed = {column.name for index in pledges.indexes for column in index.columns}
    keyed = {column.name for column in pledges.primary_key.columns}
    return [column.name for column in pledges.columns
            if column.name not in indexed | keyed][-1]


def columns_of(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def indexes_of(engine: Engine, table: str) -> set[str | None]:
    return {index["name"] for index in inspect(engine).get_indexes(table)}


def version_rows(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [(row.projector, row.version)
                for row in conn.execute(select(read_model_version))]


def stored_version(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return stored_read_model_version(conn)


def set_stored_version(engine: Engine, version: int | None) -> None:
    """`version` as the live read model's; None: no row, as before versions were recorded."""
    with engine.begin() as conn:
        if version is None:
            conn.execute(delete(read_model_version))
        else:
            conn.execute(update(read_model_version).values(version=version))


def emulate_older_version(engine: Engine, version: int | None) -> str:
    """The read model as an older version left it: a column of `rm_pledges` missing and
    `version` stored. Returns the dropped column."""
    column = droppable_column()
    with engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE "{pledges.name}" DROP COLUMN "{column}"')
    set_stored_version(engine, version)
    assert column not in columns_of(engine, pledges.name)
    return column


@pytest.fixture(params=["sqlite", "postgres"])
def installation(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Installation]:
    yield from installed(request, tmp_path, monkeypatch, EVENTS)


def test_a_new_read_model_is_of_the_codes_version_and_an_unversioned_one_of_the_first(
    tmp_path: Path
) -> None:
    engine = create_sql_engine(f"sqlite:///{tmp_path / 'read.db'}")
    try:
        assert stored_version(engine) is None
        create_read_schema(engine)
        assert version_rows(engine) == [(READ_MODEL_PROJECTOR, READ_MODEL_VERSION)]
        set_stored_version(engine, None)
        create_read_schema(engine)  # a read model there already: no row is made up
        assert version_rows(engine) == []
        assert stored_version(engine) == UNVERSIONED_READ_MODEL
    finally:
        engine.dispose()


@pytest.mark.parametrize("stored", ["older", "unversioned"])
def test_rebuild_to_the_codes_version_restores_the_shape_and_the_projector_goes_on(
    installation: Installation, capsys: pytest.CaptureFixture[str], stored: str
) -> None:
    live = installation.live
    before = installation.answers()
    sums_before = installation.live_checksums()
    indexes_before = indexes_of(live, pledges.name)
    column = emulate_older_version(live, OLDER if stored == "older" else None)

    assert main(["projections", "rebuild", "--version", str(READ_MODEL_VERSION)]) == 0

    captured = capsys.readouterr()
    lines = {line.split()[0]: line for line in captured.out.splitlines()
             if line.startswith("rm_")}
    assert lines[pledges.name].endswith("changed shape"), lines[pledges.name]
    assert "MISMATCH" not in captured.err
    assert f"{pledges.name} changed shape" in captured.out
    # Every other table was compared, and equal.
    others = checksum_lines(captured.out)
    assert set(others) == set(sums_before) - {pledges.name}
    assert all(verdict == "equal" for _, _, verdict in others.values())
    if stored == "older":
        assert (f"the live read model was version {OLDER}") in captured.out

    assert column in columns_of(live, pledges.name)
    assert indexes_of(live, pledges.name) == indexes_before
    assert installation.live_checksums() == sums_before  # rows complete, column included
    assert installation.answers() == before
    assert version_rows(live) == [(READ_MODEL_PROJECTOR, READ_MODEL_VERSION)]
    assert_no_rebuild_left(live, installation.settings)

    # The live projector goes on over the switched-in tables.
    for n in range(3):
        installation.add_deal(n)
    installation.feed.catch_up()
    assert installation.queries.position() == installation.store.head_position()
    assert len(installation.queries.deals(limit=1000).items) == len(before["deals"].items) + 3
    sums = installation.live_checksums()
    assert main(["projections", "rebuild", "--dry-run"]) == 0
    assert installation.live_checksums() == sums


@pytest.mark.parametrize("asked", [READ_MODEL_VERSION + 1, OLDER])
def test_a_version_this_code_does_not_build_is_refused(
    installation: Installation, capsys: pytest.CaptureFixture[str], asked: int
) -> None:
    sums = installation.live_checksums()

    assert main(["projections", "rebuild", "--version", str(asked)]) == 2

    err = capsys.readouterr().err
    assert f"this code builds read-model version {READ_MODEL_VERSION}, not {asked}" in err
    assert installation.live_checksums() == sums
    assert version_rows(installation.live) == [(READ_MODEL_PROJECTOR, READ_MODEL_VERSION)]
    assert_no_rebuild_left(installation.live, installation.settings)


def test_a_newer_read_model_is_gone_back_from_only_when_asked_by_name(
    installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    newer = READ_MODEL_VERSION + 1
    set_stored_version(installation.live, newer)

    assert main(["projections", "rebuild"]) == 2
    assert f"the read model is version {newer}, newer than version {READ_MODEL_VERSION}" \
        in capsys.readouterr().err
    assert stored_version(installation.live) == newer
    assert_no_rebuild_left(installation.live, installation.settings)

    assert main(["projections", "rebuild", "--version", str(READ_MODEL_VERSION)]) == 0
    assert version_rows(installation.live) == [(READ_MODEL_PROJECTOR, READ_MODEL_VERSION)]


def test_the_distributed_read_side_refuses_another_version_and_names_the_command(
    installation: Installation, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[Any] = []

    def serve(app: Any, args: Any, what: str) -> int:
        served.append(app)
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    emulate_older_version(installation.live, OLDER)

    assert main(["projections"]) == 2

    err = capsys.readouterr().err
    assert f"the read model is version {OLDER}, and this code builds version " \
           f"{READ_MODEL_VERSION}" in err
    assert f"`dealreg projections rebuild --version {READ_MODEL_VERSION}`" in err
    assert not served
    assert stored_version(installation.live) == OLDER  # nothing touched

    set_stored_version(installation.live, READ_MODEL_VERSION + 1)
    assert main(["projections"]) == 2
    assert f"newer than version {READ_MODEL_VERSION}, which this code builds" \
        in capsys.readouterr().err
    assert not served

    set_stored_version(installation.live, OLDER)
    assert main(["projections", "rebuild", "--version", str(READ_MODEL_VERSION)]) == 0
    assert main(["projections"]) == 0
    assert len(served) == 1


@pytest.fixture(params=["sqlite", "postgres"])
def embedded_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return Settings(data_dir=tmp_path / "data", database_url=url, projection_worker="thread",
                    projection_poll_seconds=0.05)


def test_the_embedded_registry_rebuilds_an_older_read_model_while_it_serves(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dealreg.projection_feed")
    first = Registry(embedded_settings)
    for body in scenario():
        assert first.post(body).status_code == 201
    deals_before = first.get("/v1/deals", min_position=first.head()).json()
    totals_before = first.get("/v1/pledges/by-sector").json()
    keys = first.keys
    first.close()
    live = create_sql_engine(embedded_settings.read_model_url())
    column = emulate_older_version(live, OLDER)

    # The rebuild waits until the test has looked at the service meanwhile.
    release = threading.Event()
    rebuild = projection_feed.rebuild_read_model

    def held_rebuild(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(60)
        return rebuild(*args, **kwargs)

    monkeypatch.setattr(projection_feed, "rebuild_read_model", held_rebuild)
    second = Registry(embedded_settings, keys)
    try:
        upgrade = second.app.state.read_model_upgrade
        assert upgrade is not None
        answer = second.get("/v1/deals")
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["code"] == "read_model_rebuilding"
        assert f"from version {OLDER} to version {READ_MODEL_VERSION}" in error["message"]
        assert answer.headers["Retry-After"]
        ready = second.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["read_model_version"]["state"] == "rebuilding"
        assert ready.json()["read_model_version"]["rebuilding_to"] == READ_MODEL_VERSION
        assert second.client.get("/healthz").status_code == 200
        # Writes are taken meanwhile, and applied after the switch.
        extra = {"event_id": "firm-late", "type": "firm_registered",
                 "occurred_at": "2025-06-01T00:00:00Z",
                 "payload": {"code": "late-firm", "name": "Late Firm", "country": "IN",
                             "kind": "recycler"}}
        written = second.post(extra)
        assert written.status_code == 201, written.text
        assert column not in columns_of(live, pledges.name)  # nothing switched yet

        release.set()
        assert upgrade.wait(120), upgrade.describe()

        assert column in columns_of(live, pledges.name)
        assert version_rows(live) == [(READ_MODEL_PROJECTOR, READ_MODEL_VERSION)]
        assert_no_rebuild_left(live, embedded_settings)
        deals = second.get("/v1/deals", min_position=written.json()["position"])
        assert deals.status_code == 200, deals.text
        assert deals.json()["items"] == deals_before["items"]
        assert second.get("/v1/pledges/by-sector").json()["items"] == totals_before["items"]
        firms = second.get("/v1/firms", limit=100).json()["items"]
        assert "late-firm" in {firm["code"] for firm in firms}
        ready = second.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["read_model_version"] == {"version": READ_MODEL_VERSION,
                                                      "state": "current"}
    finally:
        release.set()
        second.close()
        live.dispose()
    assert any(f"the read model is version {OLDER}, this code builds version "
               f"{READ_MODEL_VERSION}: rebuilding it" in record.getMessage()
               for record in caplog.records)


def test_the_embedded_registry_refuses_a_newer_read_model(
    embedded_settings: Settings
) -> None:
    Registry(embedded_settings).close()
    live = create_sql_engine(embedded_settings.read_model_url())
    try:
        set_stored_version(live, READ_MODEL_VERSION + 1)
        with pytest.raises(ReadModelVersionRefused, match=f"newer than version "
                           f"{READ_MODEL_VERSION}, which this code builds"):
            create_embedded_app(embedded_settings)
        assert stored_version(live) == READ_MODEL_VERSION + 1
    finally:
        live.dispose()


def test_a_second_rebuild_of_a_postgres_database_is_refused_while_one_runs(
    installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `dealreg up` on one PostgreSQL database upgrading at once would drop each
    other's fresh tables: the rebuild holds an advisory lock, and a second one is refused."""
    from services.projections.rebuild.rebuild import one_rebuild_at_a_time

    if installation.live.dialect.name != "postgresql":
        pytest.skip("SQLite: one process writes a read-model file")
    emulate_older_version(installation.live, OLDER)
    with one_rebuild_at_a_time(installation.live):
        assert main(["projections", "rebuild"]) == 2
    assert "another rebuild of this read model is under way" in capsys.readouterr().err
    assert stored_version(installation.live) == OLDER
    assert_no_rebuild_left(installation.live, installation.settings)
    assert main(["projections", "rebuild"]) == 0
    assert stored_version(installation.live) == READ_MODEL_VERSION
