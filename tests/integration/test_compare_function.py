"""``cohort-compare`` as deployed: statistics, privacy floor, classes and tenants."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import pytest

from mastery.bootstrap import build
from mastery.domain import Component
from tests.helpers import event_data, record
from tests.integration.conftest import token

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from mastery.settings import Settings

# student -> (class, quiz score); class c-big has 6 students, c-small 2
COHORT = {f"b{i}": ("c-big", 0.3 + 0.1 * i) for i in range(6)} | {
    "x0": ("c-small", 0.2),
    "x1": ("c-small", 0.9),
}


@pytest.fixture(scope="module")
async def school(settings: Settings) -> str:
    tenant = f"cmp-{id(settings)}"
    res = build(settings, source="test")
    await res.ingestor.ingest(
        [
            record(Component.QUIZ, event_data(tenant, s, score, class_id=c))
            for s, (c, score) in COHORT.items()
        ]
    )
    await res.aclose()
    return tenant


async def _compare(
    client: Callable[[str], httpx.AsyncClient], headers: dict[str, str], **body: object
) -> httpx.Response:
    return await client("cohort-compare").post("/analytics/compare", json=body, headers=headers)


async def test_school_and_class_statistics(
    client: Callable[[str], httpx.AsyncClient], school: str
) -> None:
    admin = token("a", "admin", school)
    resp = await _compare(client, admin, student_id="b2")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    quiz = sorted(score for _, score in COHORT.values())
    assert (doc["scope"], doc["class_id"], doc["cohort_size"]) == ("school", None, 8)
    assert doc["student"]["quiz"] == pytest.approx(0.5)
    assert doc["cohort"]["quiz"]["median"] == pytest.approx(statistics.median(quiz))
    assert doc["cohort"]["quiz"]["mean"] == pytest.approx(statistics.mean(quiz), abs=1e-4)
    # b2 has 3 students below and 1 tie (itself): mid-rank percentile
    assert doc["cohort"]["quiz"]["percentile"] == pytest.approx(100 * 3.5 / 8, abs=0.05)
    assert doc["cohort"]["mastery"]["percentile"] == pytest.approx(100 * 3.5 / 8, abs=0.05)

    resp = await _compare(client, admin, student_id="b2", scope="class")
    assert (resp.json()["class_id"], resp.json()["cohort_size"]) == ("c-big", 6)
    assert resp.json()["cohort"]["quiz"]["percentile"] == pytest.approx(100 * 2.5 / 6, abs=0.05)


async def test_small_cohorts_withhold_statistics(
    client: Callable[[str], httpx.AsyncClient], school: str
) -> None:
    resp = await _compare(client, token("x0", "student", school), student_id="x0", scope="class")
    assert resp.status_code == 200
    doc = resp.json()
    assert (doc["cohort_size"], doc["cohort"]) == (2, None)
    assert "withheld" in doc["message"]
    assert doc["student"]["quiz"] == pytest.approx(0.2)  # their own values only
    assert "0.9" not in resp.text  # the classmate's score does not leak


async def test_who_may_compare_what(
    client: Callable[[str], httpx.AsyncClient], school: str
) -> None:
    teacher = token("t", "teacher", school, classes=["c-big"])
    assert (await _compare(client, teacher, student_id="b1", scope="class")).status_code == 200
    assert (await _compare(client, teacher, student_id="x1")).status_code == 403  # not their class
    for class_id in ("c-small", "c-elsewhere"):  # not theirs, whether it exists or not
        resp = await _compare(client, teacher, student_id="b1", scope="class", class_id=class_id)
        assert resp.status_code == 403
        assert class_id not in resp.text
    student = token("b1", "student", school)
    assert (await _compare(client, student, student_id="b2")).status_code == 403
    resp = await _compare(client, student, student_id="b1", scope="class", class_id="c-small")
    assert resp.status_code == 403  # a class they are not in
    admin_elsewhere = token("a", "admin", "another-school")
    assert (await _compare(client, admin_elsewhere, student_id="b1")).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"student_id": "b1", "scope": "galaxy"}, "scope"),
        ({"student_id": "b1", "class_id": "c-big"}, "class_id"),
        ({"student_id": "b1", "scope": "class", "class_id": "no spaces"}, "class_id"),
        ({"student_id": "b1", "cohort": "x"}, "cohort"),
    ],
)
async def test_bad_requests_name_the_field(
    client: Callable[[str], httpx.AsyncClient], school: str, body: dict[str, object], field: str
) -> None:
    resp = await _compare(client, token("a", "admin", school), **body)
    assert resp.status_code == 422
    assert field in resp.text


async def test_a_student_in_no_class_compared_by_class_names_the_scope(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, school: str
) -> None:
    """A 422 names its field in ``errors``, as every other 422 does (docs/api.md)."""
    res = build(settings, source="test")
    await res.ingestor.ingest([record(Component.QUIZ, event_data(school, "loner", 0.5))])
    await res.aclose()
    resp = await _compare(client, token("a", "admin", school), student_id="loner", scope="class")
    assert resp.status_code == 422
    [error] = resp.json()["errors"]
    assert error["field"] == "scope"
    assert "no class" in error["message"]
