"""The engine on secured servers: Kafka over TLS with SASL/SCRAM and a client certificate,
Redis over TLS as the least-privilege ACL user of docs/redis-acl.md. And what a wrong
password or an untrusted certificate looks like: one line at start-up, a 503 /ready."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import redis.exceptions
from pydantic import SecretStr

from mastery.bootstrap import build, preflight
from mastery.domain import Component
from mastery.errors import Misconfigured
from mastery.events.kafka import create_topics, probe
from mastery.store.client import redis_client
from mastery.topics import AUDIT_TOPIC, LEVEL_CHANGED_TOPIC, event_topic, with_dead_letters
from mastery.web.batch import submit_batch
from mastery.web.compare import compare_cohort
from mastery.web.gdpr import erase_student, export_student
from mastery.web.history import mastery_history_report
from mastery.web.query import query_mastery
from tests.helpers import event_data, produce, record
from tests.integration.conftest import serve, token
from tests.secure.conftest import ROOT

if TYPE_CHECKING:
    from pathlib import Path

    from mastery.bootstrap import Resources
    from mastery.settings import Settings
    from tests.secure.certs import Pki

TOPIC = event_topic(Component.QUIZ)
STUDENTS = [f"s{i}" for i in range(1, 6)]  # a class of 5: the cohort may show statistics


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _mastery(env: dict[str, str], *argv: str, timeout: float = 60) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mastery.cli", *argv],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_events_flow_over_sasl_ssl_into_a_tls_redis_as_the_acl_user(
    secure_env: dict[str, str], secure_settings: Settings, tenant: str, tmp_path: Path
) -> None:
    create_topics(secure_settings, [*with_dead_letters([TOPIC]), LEVEL_CHANGED_TOPIC, AUDIT_TOPIC])
    events = [
        record(Component.QUIZ, event_data(tenant, s, 0.2 + 0.15 * i, class_id="c1"))
        for i, s in enumerate(STUDENTS)
    ]
    produce(secure_settings, events)
    ready = tmp_path / "consume.ready"
    consumer = _mastery(
        secure_env, "consume", TOPIC, "--group", f"g-{tenant}", "--ready-file", str(ready)
    )
    res = build(secure_settings.model_copy(update={"rate_limit_student": 2}))
    admin = token("a1", "admin", tenant)
    try:
        fn = serve(
            "engine",
            {
                "POST /mastery/query": query_mastery,
                "POST /analytics/compare": compare_cohort,
                "POST /gdpr/erase": erase_student,
                "POST /gdpr/export": export_student,
                "POST /analytics/mastery-history": mastery_history_report,
                "POST /batch/mastery": submit_batch,
            },
            res,
        )
        async with fn:
            # apply (mastery consume, SASL_SSL in, ACL user in Redis) -> query
            deadline = time.monotonic() + 30
            while True:
                answers = [
                    await fn.post("/mastery/query", json={"student_id": s}, headers=admin)
                    for s in STUDENTS
                ]
                if all(a.status_code == 200 for a in answers) or time.monotonic() > deadline:
                    break
                assert consumer.poll() is None, consumer.stderr.read() if consumer.stderr else ""
                await asyncio.sleep(0.2)
            assert [a.status_code for a in answers] == [200] * 5
            assert answers[4].json()["components"]["quiz"]["score"] == pytest.approx(0.8)

            # cohort comparison (the compare script, the school's indexes)
            compared = await fn.post("/analytics/compare", json={"student_id": "s1"}, headers=admin)
            assert compared.status_code == 200, compared.text
            assert compared.json()["cohort_size"] == 5
            assert compared.json()["cohort"]["mastery"]["percentile"] == pytest.approx(10.0)

            # a synchronous batch (one pipelined read)
            batch = await fn.post("/batch/mastery", json={"student_ids": STUDENTS}, headers=admin)
            assert batch.status_code == 200, batch.text
            assert batch.json()["succeeded"] == 5

            # rate limit (the GCRA script): 2 a minute for a student
            student = token("s2", "student", tenant)
            codes = [
                (
                    await fn.post("/mastery/query", json={"student_id": "s2"}, headers=student)
                ).status_code
                for _ in range(3)
            ]
            assert codes == [200, 200, 429]

            # history, made then served from its cache (GET / SET of the entry)
            histories = [
                await fn.post(
                    "/analytics/mastery-history", json={"student_id": "s5"}, headers=admin
                )
                for _ in range(2)
            ]
            assert [h.status_code for h in histories] == [200, 200], histories[0].text
            assert histories[1].content == histories[0].content

            # export (the seen-id buckets read back, the xAPI records, batch results)
            exported = await fn.post("/gdpr/export", json={"student_id": "s5"}, headers=admin)
            assert exported.status_code == 200, exported.text
            assert len(exported.json()["event_id_hashes"]) == 1

            # erasure (the erase script, the audit trimmed by XDEL)
            erased = await fn.post("/gdpr/erase", json={"student_id": "s5"}, headers=admin)
            assert erased.status_code == 200, erased.text
            assert erased.json()["keys_deleted"] > 0
            gone = await fn.post("/mastery/query", json={"student_id": "s5"}, headers=admin)
            assert gone.status_code == 404

            ready_now = await fn.get("/ready")
            assert ready_now.status_code == 200, ready_now.text
    finally:
        consumer.terminate()
        _, err = consumer.communicate(timeout=20)
        await res.aclose()
    assert consumer.returncode == 0, err


async def test_the_acl_user_gets_nothing_beyond_the_rule(secure_settings: Settings) -> None:
    client = redis_client(secure_settings)
    try:
        assert await client.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.set("not-ours", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.keys("m:*")
    finally:
        await client.aclose()


def _bad(pki: Pki, secrets_dir: Path) -> dict[str, tuple[dict[str, str], str]]:
    wrong = secrets_dir / "wrong"
    wrong.write_text("not-the-password\n")
    return {
        "kafka-password": (
            {"KAFKA_SASL_PASSWORD_FILE": str(wrong)},
            "SASL authentication error: Authentication failed",
        ),
        "kafka-certificate": (
            {"KAFKA_SSL_CA_LOCATION": str(pki.rogue_ca)},
            "SSL handshake failed",
        ),
        "redis-password": (
            {"REDIS_PASSWORD_FILE": str(wrong)},
            "redis: AuthenticationError: invalid username-password pair",
        ),
        "redis-certificate": (
            {"REDIS_TLS_CA_FILE": str(pki.rogue_ca)},
            "redis: TLS:",
        ),
    }


@pytest.mark.parametrize(
    "case", ["kafka-password", "kafka-certificate", "redis-password", "redis-certificate"]
)
def test_a_refused_configuration_is_one_line_and_exit_2(
    case: str, secure_env: dict[str, str], pki: Pki, secrets_dir: Path
) -> None:
    change, expected = _bad(pki, secrets_dir)[case]
    proc = _mastery({**secure_env, **change}, "consume", TOPIC, "--group", f"g-{uuid.uuid4().hex}")
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("mastery-consume: cannot start: "), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(
    ("field", "check"), [("kafka_sasl_password", "kafka"), ("redis_password", "redis")]
)
async def test_a_wrong_password_makes_ready_say_why(
    field: str, check: str, secure_settings: Settings
) -> None:
    bad = secure_settings.model_copy(update={field: SecretStr("wrong"), f"{field}_file": None})
    res: Resources = build(bad)
    try:
        async with serve("engine", {"POST /mastery/query": query_mastery}, res) as fn:
            answer = await fn.get("/ready")
        assert answer.status_code == 503
        checks = answer.json()["checks"]
        assert "authentication" in checks[check].lower(), checks
        assert [k for k, v in checks.items() if v != "ok"] == [check], checks
        with pytest.raises(Misconfigured):
            await preflight(res)
    finally:
        await res.aclose()


def test_an_untrusted_broker_certificate_is_refused(secure_settings: Settings, pki: Pki) -> None:
    probe(secure_settings)  # the right CA: accepted
    with pytest.raises(Misconfigured, match="certificate verify failed"):
        probe(secure_settings.model_copy(update={"kafka_ssl_ca_location": pki.rogue_ca}))
