"""The dashboard and the auditor console: server-rendered pages over the read API."""

from __future__ import annotations

from fastapi import FastAPI

from services.projections.read_model.queries import ReadModelQueries
from services.shared.api_keys import ApiKeyStore
from services.shared.http_basics import HttpMetrics


def install_pages(app: FastAPI, queries: ReadModelQueries, keys: ApiKeyStore,
                  metrics: HttpMetrics) -> None:
    """Mount the pages at `/` and their static files (to be built: issue 11)."""
