"""Schema-driven fuzzing of the running dev stack: every operation of the gateway's OpenAPI
document, with a valid token of each role, positive and negative inputs.

Each response must conform to the document (status code, content type, body, headers) and
none may be a 5xx. Bounded: ``_EXAMPLES`` cases an operation, each sent once per role.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
import schemathesis
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from mastery.dev.stack import DEV_JWT_SECRET
from mastery.domain import Component
from mastery.topics import event_topic
from mastery.web.openapi import gateway_document
from tests.e2e.test_dev_stack import Stack
from tests.helpers import event_data, record, xapi_statement

if TYPE_CHECKING:
    from schemathesis import Case

TENANT = "fuzz"
_EXAMPLES = 12
_ROLES: dict[str, dict[str, Any]] = {
    "student": {"sub": "s1"},
    "teacher": {"sub": "t1", "classes": ["c1"]},
    "admin": {"sub": "a1"},
}
#: What the run saw, for the summary test: operation -> status -> count.
SEEN: dict[str, Counter[int]] = {}


def _token(role: str, secret: str = DEV_JWT_SECRET) -> str:
    claims = {**_ROLES[role], "role": role, "tenant": TENANT, "exp": int(time.time()) + 900}
    return jwt.encode(claims, secret, algorithm="HS256")


def _send(case: Case, url: str, token: str) -> Any:
    """The case with this bearer token, its response checked against the document.

    Schemathesis' own auth probe (``ignored_auth``) is left out: it counts a token set on
    the case as generated (so "likely invalid") and replays one passed to the call, so it
    cannot tell a role's valid token from none; the forged-token request stands for it.
    """
    headers = {"authorization": f"Bearer {token}"}
    if case.path == "/mcp":
        headers["accept"] = "application/json, text/event-stream"
    excluded = [ignored_auth]
    if case.path == "/xapi/statements":
        # xAPI rules across fields (one identifier per Agent, score.raw within min..max)
        # are not JSON Schema: a schema-valid statement may still be a documented 400.
        excluded.append(positive_data_acceptance)
    return case.call_and_validate(base_url=url, headers=headers, excluded_checks=excluded)


def _seed(stack: Stack) -> None:
    """s1 and s2 (class c1) have events of every component, so reads answer 200 too."""
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{stack.kafka}"})
    for student in ("s1", "s2"):
        for i, component in enumerate(Component):
            data = event_data(TENANT, student, 0.5 + i / 10, datetime.now(UTC), class_id="c1")
            r = record(component, data, event_id=f"fuzz-seed-{student}-{i}")
            value, key, headers = r.value, r.key, list(r.headers.items())
            producer.produce(event_topic(component), value, key, headers=headers)
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 15
    headers = {"authorization": f"Bearer {_token('admin')}"}
    while time.monotonic() < deadline:
        resp = httpx.post(f"{stack.url}/mastery/query", json={"student_id": "s1"}, headers=headers)
        if resp.status_code == 200 and resp.json()["version"] == len(Component):
            return
        time.sleep(0.1)
    raise AssertionError("seed events never applied")


@pytest.fixture(scope="module")
def fuzz_stack(api_stack: Stack) -> Stack:
    _seed(api_stack)
    return api_stack


@pytest.fixture(scope="module")
def served(fuzz_stack: Stack) -> dict[str, Any]:
    resp = httpx.get(f"{fuzz_stack.url}/openapi.json", timeout=10)
    assert resp.status_code == 200
    doc: dict[str, Any] = resp.json()
    return doc


@pytest.fixture(scope="module")
def api(served: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(served)


def test_the_gateway_serves_the_committed_document(served: dict[str, Any]) -> None:
    assert served == gateway_document()


_KNOWN: dict[tuple[str, str], Any] = {
    ("/mastery/query", "POST"): {"student_id": "s1"},
    ("/predictions/next-week", "POST"): {"student_id": "s1"},
    ("/recommendations/adaptive", "POST"): {"student_id": "s1"},
    ("/analytics/mastery-history", "POST"): {"student_id": "s1"},
    ("/analytics/compare", "POST"): {"student_id": "s1", "scope": "class"},
    ("/process", "POST"): {"student_id": "s1", "intent": "prediction"},
    ("/gdpr/export", "POST"): {"student_id": "s1"},
    ("/gdpr/erase", "POST"): {"student_id": "s2"},
    ("/audit/recent", "POST"): {"limit": 5},
    ("/batch/mastery", "POST"): {"student_ids": ["s1", "s2"]},
    ("/mcp", "POST"): {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    ("/xapi/statements", "POST"): xapi_statement("s1", "scored", scaled=0.7),
}
#: Every operation, positive and negative; an operation that takes no input (no
#: parameter, no body: xAPI's About) has nothing to make invalid, so positive only.
_CASES = [
    (method.upper(), path, mode)
    for path, item in gateway_document()["paths"].items()
    for method, op in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "parameters" in op or "requestBody" in op
]
#: Operations served without a token: a forged one is no refusal there.
_PUBLIC = {
    (method.upper(), path)
    for path, item in gateway_document()["paths"].items()
    for method, op in item.items()
    if "security" not in op
}


@pytest.mark.parametrize(("method", "path", "mode"), _CASES)
def test_every_operation_conforms(
    api: Any, fuzz_stack: Stack, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api[path][method]
    if mode is GenerationMode.POSITIVE and (path, method) in _KNOWN:
        # One case on seeded data, so the 200 answers are checked as well as the refusals.
        version = {"X-Experience-API-Version": "1.0.3"} if path == "/xapi/statements" else {}
        known = operation.Case(body=_KNOWN[path, method], headers=version)
        for role in _ROLES:
            resp = _send(known, fuzz_stack.url, _token(role))
            SEEN.setdefault(f"{method} {path}", Counter())[resp.status_code] += 1
            assert resp.status_code < 500, resp.text

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Case) -> None:
        for role in _ROLES:
            resp = _send(case, fuzz_stack.url, _token(role))
            SEEN.setdefault(f"{method} {path}", Counter())[resp.status_code] += 1
            assert resp.status_code < 500, resp.text
        # Refusals conform too: a token signed with another key is a documented 401.
        forged = _send(case, fuzz_stack.url, _token("admin", secret="x" * 32))
        SEEN.setdefault(f"{method} {path}", Counter())[forged.status_code] += 1
        if (method, path) in _PUBLIC:
            assert forged.status_code == 200, forged.text
            return
        # (A path whose parameter routes to no function is a 404 before any token is read.)
        routed = mode is GenerationMode.POSITIVE or not case.path_parameters
        assert forged.status_code == 401 or (not routed and forged.status_code == 404), forged.text

    run()


def test_every_operation_was_fuzzed() -> None:
    expected = {f"{m.upper()} {p}" for p, item in gateway_document()["paths"].items() for m in item}
    assert set(SEEN) == expected
    assert all(s < 500 for statuses in SEEN.values() for s in statuses)
    total = sum(sum(c.values()) for c in SEEN.values())
    print(f"\nfuzzed {len(SEEN)} operations, {total} requests:")
    for key in sorted(SEEN):
        print(f"  {key}: {dict(sorted(SEEN[key].items()))}")
