"""Fixtures of the integration tests that run the deployed functions in process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mastery.events.kafka import create_topics
from tests.conftest import JWT_SECRET

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mastery.settings import Settings

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"


@pytest.fixture(scope="module")
def function_env(settings: Settings) -> Iterator[None]:
    """The deployed functions read their settings from the environment, as in production."""
    create_topics(settings)
    env = {
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MASTERY_JWT_SECRET": JWT_SECRET,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
