"""The app each worker process of `dealreg registry --workers N` and `dealreg projections
--workers N` builds for itself: from the DEALREG_* environment all the workers inherit, so
from the same settings, with its own connections, group committer or Kafka consumer.
uvicorn's supervisor calls these by name (`services.worker_apps:registry_app`) in every
worker it starts, and in each one it starts again."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from services.shared.http_server import settle_collector
from services.shared.log_setup import configure_logging
from services.shared.settings import Settings, load_settings

log = logging.getLogger("dealreg.workers")


def registry_app() -> FastAPI:
    from services.registry.service import create_registry_app

    return _worker_app(create_registry_app)


def projections_app() -> FastAPI:
    from services.projections.service import create_projection_app

    return _worker_app(create_projection_app)


def _worker_app(create: Callable[[Settings], FastAPI]) -> FastAPI:
    from services.cli import operator_error

    settings = load_settings({})
    configure_logging(settings.log_level)
    try:
        app = create(settings)
    except Exception as exc:  # noqa: BLE001 - any failure to build the app ends the service
        message = operator_error(exc)
        if message is None:
            log.exception("worker could not build its app")
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)
        # uvicorn's supervisor stops every worker when one exits so, instead of starting
        # it again and again: what failed would fail the same way each time.
        sys.exit(STARTUP_FAILURE)
    settle_collector()  # as `dealreg` does in one process (services.cli._serve)
    return app
