"""The worker's Celery app: ``celery -A worker.app worker`` (or ``videoq worker``).

Importing this module builds the app from the environment's settings. Only the worker
imports it: producers publish by task name through ``worker.config.publisher``.
"""

from __future__ import annotations

from celery import Celery, signals

from .config import celery_config
from .logs import install_json_format, install_redaction
from .process import ProcessRuntime
from .pump import PumpStep
from .runtime import Runtime
from .settings import Settings, load_settings
from .sweeper import SweeperStep


class VideoqCelery(Celery):  # type: ignore[misc]
    """The Celery app, carrying videoq's settings and each process's runtime."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("videoq", include=["worker.tasks"])
        self.videoq_settings = settings
        self.config_from_object(celery_config(settings))
        self.steps["worker"].add(SweeperStep)
        self.steps["worker"].add(PumpStep)
        self._process = ProcessRuntime(settings, self.send_task)

    def runtime(self) -> Runtime:
        """This process's Redis pool, event loop, HTTP clients and scheduler."""
        return self._process.get()


def create_app(settings: Settings | None = None) -> VideoqCelery:
    return VideoqCelery(settings or load_settings())


app = create_app()


@signals.after_setup_logger.connect  # type: ignore[untyped-decorator]
@signals.after_setup_task_logger.connect  # type: ignore[untyped-decorator]
def _redact_logs(**_: object) -> None:
    secrets = [app.videoq_settings.aimlapi_key.get_secret_value()]
    install_redaction(secrets)
    if app.videoq_settings.log_format == "json":
        install_json_format(secrets)
