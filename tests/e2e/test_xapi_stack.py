"""xAPI on the running dev stack: statements posted through the gateway, and on the topic."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import orjson
from confluent_kafka import Producer

from mastery.dev.stack import DEV_JWT_SECRET
from mastery.topics import XAPI_TOPIC
from tests.e2e.conftest import XAPI_HOME, XAPI_TENANT
from tests.helpers import xapi_statement

if TYPE_CHECKING:
    from tests.e2e.test_dev_stack import Stack


def _admin(tenant: str) -> dict[str, str]:
    claims = {"sub": "lrs", "role": "admin", "tenant": tenant, "exp": int(time.time()) + 300}
    return {"authorization": f"Bearer {jwt.encode(claims, DEV_JWT_SECRET, algorithm='HS256')}"}


def _mastery(stack: Stack, tenant: str, student: str, version: int) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        resp = httpx.post(
            f"{stack.url}/mastery/query", json={"student_id": student}, headers=_admin(tenant)
        )
        if resp.status_code == 200 and resp.json()["version"] >= version:
            doc: dict[str, Any] = resp.json()
            return doc
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.1)


def test_statements_posted_through_the_gateway(api_stack: Stack) -> None:
    tenant = f"xapi-http-{int(time.time())}"
    statements = [
        xapi_statement("s1", "passed", scaled=0.9),
        xapi_statement("s1", "completed", scaled=None),
        xapi_statement("s1", "launched", scaled=None),  # not mapped: accepted, ignored
    ]
    resp = httpx.post(
        f"{api_stack.url}/xapi/statements",
        content=orjson.dumps(statements),
        headers={
            **_admin(tenant),
            "content-type": "application/json",
            "x-experience-api-version": "1.0.3",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == [s["id"] for s in statements]
    doc = _mastery(api_stack, tenant, "s1", 2)
    assert doc["components"]["quiz"]["score"] == 0.9
    assert doc["components"]["completion"]["score"] == 1.0


def test_a_statement_put_through_the_gateway_over_http_basic(api_stack: Stack) -> None:
    """As tincan (Open edX) sends a statement with an id, with Basic credentials as Moodle
    and Ralph send them: the token as password. The version header reaches the client."""
    tenant = f"xapi-put-{int(time.time())}"
    statement = xapi_statement("s1", "passed", scaled=0.6)
    token = _admin(tenant)["authorization"].removeprefix("Bearer ")
    resp = httpx.put(
        f"{api_stack.url}/xapi/statements",
        params={"statementId": statement["id"]},
        content=orjson.dumps(statement),
        auth=("moodle", token),
        headers={"content-type": "application/json", "x-experience-api-version": "1.0.3"},
    )
    assert resp.status_code == 204, resp.text
    assert resp.headers["x-experience-api-version"] == "1.0.3"
    assert _mastery(api_stack, tenant, "s1", 1)["components"]["quiz"]["score"] == 0.6


def test_a_different_statement_under_a_held_id_is_409_through_the_gateway(
    api_stack: Stack,
) -> None:
    tenant = f"xapi-conflict-{int(time.time())}"
    statement = xapi_statement("s1", "passed", scaled=0.6)
    headers = {
        **_admin(tenant),
        "content-type": "application/json",
        "x-experience-api-version": "1.0.3",
    }
    url = f"{api_stack.url}/xapi/statements"
    params = {"statementId": statement["id"]}
    first = httpx.put(url, params=params, content=orjson.dumps(statement), headers=headers)
    assert first.status_code == 204, first.text
    other = {**statement, "result": {"score": {"scaled": 0.1}}}
    refused = httpx.put(url, params=params, content=orjson.dumps(other), headers=headers)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["x-experience-api-version"] == "1.0.3"
    assert statement["id"] in refused.json()["detail"]
    doc = _mastery(api_stack, tenant, "s1", 1)
    assert (doc["version"], doc["components"]["quiz"]["score"]) == (1, 0.6)


def test_the_about_resource_through_the_gateway_without_credentials(api_stack: Stack) -> None:
    """What a client reads first, to choose its version: no token, no version header."""
    resp = httpx.get(f"{api_stack.url}/xapi/about")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"version": ["1.0.3"]}
    assert resp.headers["x-experience-api-version"] == "1.0.3"


def test_statements_on_the_topic_reach_the_tenant_of_their_home_page(api_stack: Stack) -> None:
    student = f"x{int(time.time())}"
    statement = xapi_statement(student, "scored", scaled=0.4, home_page=XAPI_HOME)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{api_stack.kafka}"})
    headers = [("content-type", b"application/json")]
    producer.produce(XAPI_TOPIC, orjson.dumps(statement), student.encode(), headers=headers)
    producer.produce(XAPI_TOPIC, b"{not json", student.encode(), headers=headers)
    assert producer.flush(10) == 0
    doc = _mastery(api_stack, XAPI_TENANT, student, 1)
    assert doc["components"]["quiz"]["score"] == 0.4


def test_a_tenant_header_on_the_topic_wins_over_the_home_page(api_stack: Stack) -> None:
    """As the statements the engine took over HTTP carry it: `mastery trigger` delivers
    the header as KafkaSource does (an extension), and on-xapi reads the tenant from it."""
    student = f"h{int(time.time())}"
    tenant = f"xapi-header-{int(time.time())}"
    statement = xapi_statement(student, "scored", scaled=0.7, home_page=XAPI_HOME)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{api_stack.kafka}"})
    headers = [("content-type", b"application/json"), ("mastery_tenant", tenant.encode())]
    producer.produce(XAPI_TOPIC, orjson.dumps(statement), student.encode(), headers=headers)
    assert producer.flush(10) == 0
    doc = _mastery(api_stack, tenant, student, 1)
    assert doc["components"]["quiz"]["score"] == 0.7
    elsewhere = httpx.post(
        f"{api_stack.url}/mastery/query", json={"student_id": student}, headers=_admin(XAPI_TENANT)
    )
    assert elsewhere.status_code == 404, elsewhere.text  # not also in the home page's tenant
