"""The service's logging follows `sys.stderr` as it is when a record is emitted: a process
that swaps it (a test capturing output, then closing the capture) is never left logging into
a closed stream."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from services.shared.log_setup import configure_logging


def test_records_go_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("INFO")
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logging.getLogger("dealreg.test").info("one")
    first.close()  # the capture ends, as pytest's does between tests
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("dealreg.test").info("two")
    (line,) = second.getvalue().splitlines()
    assert json.loads(line)["msg"] == "two"  # not a "--- Logging error ---" report
