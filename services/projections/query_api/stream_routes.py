"""`GET /v1/stream`: new log positions and event summaries as server-sent events."""

from __future__ import annotations

from fastapi import FastAPI

from services.projections.read_model.progress import AppliedPosition
from services.projections.read_model.queries import ReadModelQueries
from services.shared.api_keys import ApiKeyStore
from services.shared.http_basics import HttpMetrics


def install_stream_api(app: FastAPI, queries: ReadModelQueries, keys: ApiKeyStore,
                       metrics: HttpMetrics, applied: AppliedPosition) -> None:
    """Mount the event stream (to be built: issue 11)."""
