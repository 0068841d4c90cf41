"""A function's import loads what it answers with, not what other functions use.

Every module imported at start is paid for on each cold start (scale from zero); the ingest
path, the batch runner and every other handler's models are loaded on first use instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
#: Loaded only by the functions that use them (on first use: ``bootstrap.Resources``).
_ELSEWHERE = (
    "mastery.events.codec",  # the ingest path: Avro, CloudEvents, the event models
    "mastery.events.ingest",
    "mastery.events.xapi",
    "mastery.batch.runner",
    "mastery.events.access_log",
    "mastery.web.openapi",  # every function's models: on the first GET /openapi.json
    "mastery.web.batch",
    "mastery.dev",
    "fastavro",
)


def _loaded(function: str) -> set[str]:
    main = _ROOT / "functions" / function / "main.py"
    code = f"import runpy, sys; runpy.run_path({str(main)!r}); print(' '.join(sys.modules))"
    env = os.environ | {"MASTERY_JWT_SECRET": "s" * 32}  # or the function does not start
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("function", ["mastery_query", "prediction", "mastery_history"])
def test_a_query_function_loads_no_ingest_batch_or_openapi_modules(function: str) -> None:
    loaded = _loaded(function)
    assert sorted(m for m in _ELSEWHERE if m in loaded) == []


def test_an_event_handler_loads_the_ingest_path_only_on_first_use() -> None:
    loaded = _loaded("on_quiz")
    assert "mastery.events.codec" not in loaded
    assert "mastery.batch.runner" not in loaded
