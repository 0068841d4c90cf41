"""One dev stack for the interface tests (fuzzing, xAPI): started once, shared."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_dev_stack import Stack

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The xAPI topic's tenants (MASTERY_XAPI_TENANTS) in the shared stack.
XAPI_HOME = "https://lms.fuzz.example"
XAPI_TENANT = "xapi-e2e"


@pytest.fixture(scope="session")
def api_stack() -> Iterator[Stack]:
    # Limits high enough that fuzzing reaches the handlers rather than 429 after 50 calls.
    env = {f"MASTERY_RATE_LIMIT_{r}": "100000" for r in ("STUDENT", "TEACHER", "ADMIN")}
    env["MASTERY_XAPI_TENANTS"] = json.dumps({XAPI_HOME: XAPI_TENANT})
    stack = Stack(env)
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()
