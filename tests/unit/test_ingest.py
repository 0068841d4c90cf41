"""``Ingestor`` on in-memory fakes of its ports: order of effects, outcomes, the outbox.

What only the real servers can show (the apply script, at-most-once across restarts,
the consumer's offsets) stays in ``tests/integration/test_ingest.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from prometheus_client import REGISTRY

import mastery.events.ingest
from mastery.domain import Component
from mastery.errors import Unavailable
from mastery.events.ingest import Ingestor
from mastery.events.notifications import LEVEL_CHANGED_TOPIC
from mastery.logs import logger
from mastery.ports import Outcome, Record
from mastery.topics import XAPI_TOPIC
from tests.fakes import FakeClock, FakeEventStore, FakePublisher
from tests.helpers import event_data, record, xapi_statement

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NOW = datetime(2030, 3, 1, 12, tzinfo=UTC)
TENANT = "school-1"


def _ingestor(
    log: list[str] | None = None,
) -> tuple[Ingestor, FakeEventStore, FakePublisher]:
    store, publisher = FakeEventStore(log), FakePublisher(log)
    return Ingestor(store, publisher, clock=FakeClock(NOW), source="unit"), store, publisher


def _good(student: str = "s1", event_id: str | None = None) -> Record:
    data = event_data(TENANT, student, 0.8, at=NOW - timedelta(hours=1))
    return record(Component.QUIZ, data, event_id=event_id)


def _from_the_future() -> Record:
    """Valid on the wire, refused by the model: it happens a day after the clock's now."""
    return record(Component.QUIZ, event_data(TENANT, "s2", 0.5, at=NOW + timedelta(days=1)))


def _note(student: str, version: int) -> bytes:
    return orjson.dumps(
        {
            "tenant": TENANT,
            "student_id": student,
            "version": version,
            "changed_at": int(NOW.timestamp() * 1000),
            "old_level": "developing",
            "new_level": "competent",
            "mastery": 1,  # as Lua's cjson writes 1.0 and 0.0
            "previous_mastery": 0,
        }
    )


async def test_dead_letters_are_published_before_anything_is_applied() -> None:
    log: list[str] = []
    ingestor, store, publisher = _ingestor(log)
    results = await ingestor.ingest([_good(), _from_the_future()])
    assert log == ["publish ['mastery.quiz.dlq']", "apply 1+1"]
    [dead] = publisher.sent
    assert dict(dead.headers)["dlq_reason"].decode().startswith("occurred_at")
    assert [o for o, _ in results] == [Outcome.APPLIED, Outcome.REJECTED]
    # Audited with the same reason.
    assert [(r[1], r[2]) for r in store.unapplied] == [(Outcome.REJECTED, results[1][1])]


async def test_nothing_is_applied_while_the_dead_letter_cannot_be_published() -> None:
    ingestor, store, publisher = _ingestor()
    publisher.down = True
    with pytest.raises(Unavailable):
        await ingestor.ingest([_good(), _from_the_future()])
    assert store.applied == []
    assert store.unapplied == []


async def test_one_outcome_per_record_in_order_and_redelivery_is_a_duplicate() -> None:
    ingestor, store, _ = _ingestor()
    first, second = _good("s1", "e-1"), _good("s3", "e-2")
    results = await ingestor.ingest([first, _from_the_future(), second])
    assert [o for o, _ in results] == [Outcome.APPLIED, Outcome.REJECTED, Outcome.APPLIED]
    assert results[0][1] is None
    assert results[1][1] is not None
    again = await ingestor.ingest([second])
    assert again == [(Outcome.DUPLICATE, None)]
    assert [o.event_id for o in store.applied] == ["e-1", "e-2"]
    assert all(o.occurred_at == NOW - timedelta(hours=1) for o in store.applied)


async def test_a_record_the_decoder_trips_on_is_dead_lettered_and_the_rest_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A defect met by one record (an exception no check foresaw) must not stop its
    partition: the consumer would meet the same record at every restart."""
    poison = _good("s9")
    real = mastery.events.ingest.decode

    def decode(record: Record, *args: Any, **kwargs: Any) -> Any:
        if record is poison:
            raise RecursionError("maximum recursion depth exceeded")
        return real(record, *args, **kwargs)

    monkeypatch.setattr(mastery.events.ingest, "decode", decode)
    ingestor, store, publisher = _ingestor()
    results = await ingestor.ingest([_good("s1"), poison, _good("s2")])
    assert [o for o, _ in results] == [Outcome.APPLIED, Outcome.REJECTED, Outcome.APPLIED]
    assert results[1][1] == "malformed: not decodable (RecursionError)"
    [dead] = publisher.sent
    assert dict(dead.headers)["dlq_reason"] == b"malformed: not decodable (RecursionError)"
    assert [(r[1], r[2]) for r in store.unapplied] == [(Outcome.REJECTED, results[1][1])]


async def test_an_unmapped_xapi_statement_is_ignored_not_dead_lettered() -> None:
    """``IgnoredEvent`` is an ``Exception`` too: caught as one, each statement that maps to
    nothing went to the DLQ as "not decodable", logged at ERROR."""
    store, publisher = FakeEventStore(), FakePublisher()
    lms = {"https://lms.example": TENANT}
    ingestor = Ingestor(store, publisher, clock=FakeClock(NOW), source="unit", xapi_tenants=lms)
    unmapped = xapi_statement("s1", "experienced", scaled=None, at=NOW - timedelta(hours=1))
    headers = {"content-type": b"application/json"}
    results = await ingestor.ingest([Record(XAPI_TOPIC, orjson.dumps(unmapped), headers=headers)])
    assert results == [
        (Outcome.IGNORED, "verb http://adlnet.gov/expapi/verbs/experienced maps to no component")
    ]
    assert publisher.sent == []
    assert [(r[0], r[1]) for r in store.unapplied] == [(TENANT, Outcome.IGNORED)]


def _dead_letters() -> dict[str, float]:
    """Every ``mastery_dead_letters_total`` sample, by reason class."""
    return {
        s.labels["reason"]: s.value
        for family in REGISTRY.collect()
        if family.name == "mastery_dead_letters"
        for s in family.samples
        if s.name == "mastery_dead_letters_total"
    }


def _events(outcome: str) -> float:
    return REGISTRY.get_sample_value("mastery_events_total", {"outcome": outcome}) or 0.0


async def test_an_ignored_event_is_counted_as_ignored_not_as_a_dead_letter() -> None:
    """Its reason is audited, but it reaches no DLQ: counted as a dead letter, it fired
    MasteryDeadLettersGrowing over an empty DLQ."""
    lms = {"https://lms.example": TENANT}
    ingestor = Ingestor(FakeEventStore(), FakePublisher(), clock=FakeClock(NOW), xapi_tenants=lms)
    unmapped = xapi_statement("s1", "experienced", scaled=None, at=NOW - timedelta(hours=1))
    headers = {"content-type": b"application/json"}
    dead, ignored = _dead_letters(), _events("ignored")
    await ingestor.ingest([Record(XAPI_TOPIC, orjson.dumps(unmapped), headers=headers)])
    assert _dead_letters() == dead
    assert _events("ignored") == ignored + 1


async def test_a_rejected_event_is_counted_as_a_dead_letter_of_its_reason_class() -> None:
    ingestor, _, _ = _ingestor()
    dead, counted = _dead_letters(), _events("dead_lettered")
    await ingestor.ingest([_from_the_future()])
    assert _dead_letters() == dead | {"in_future": dead.get("in_future", 0.0) + 1}
    assert _events("dead_lettered") == counted + 1


@pytest.fixture
def logged() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """What the ingestor (source ``unit``) has logged so far, one document a line."""
    stream = io.StringIO()
    handler = logger("unit")._logger.handlers[0]  # type: ignore[attr-defined]
    before = handler.setStream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    handler.setStream(before)


def _dead_lines(logged: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [line for line in logged() if line["message"] == "event dead-lettered"]


async def test_each_dead_letter_is_logged_once_with_where_and_why_but_not_its_payload(
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    ingestor, store, publisher = _ingestor()
    late = record(
        Component.QUIZ,
        event_data(TENANT, "student-late", 0.5, at=NOW + timedelta(days=1)),
        event_id="e-late",
    )
    junk = Record("mastery.quiz", b"\x00\x01", headers={"ce_id": b"e-junk"}, partition=2, offset=7)
    full = _good("student-full", "e-full")
    day_full = "the student already has 65535 quiz events on this day: a day record holds no more"
    store.refuse = {"e-full": day_full}
    await ingestor.ingest([_good(), late, junk, full])
    await ingestor.ingest([_good()])
    reasons = [dict(m.headers)["dlq_reason"].decode() for m in publisher.sent]
    lines = _dead_lines(logged)
    assert [
        (x["level"], x["event_id"], x.get("tenant"), x["topic"], x["partition"], x["offset"])
        for x in lines
    ] == [
        ("WARNING", "e-late", TENANT, "mastery.quiz", -1, -1),
        ("WARNING", "e-junk", None, "mastery.quiz", 2, 7),
        ("WARNING", "e-full", TENANT, "mastery.quiz", -1, -1),
    ]
    assert [x["reason"] for x in lines] == reasons
    assert [x["reason_class"] for x in lines] == ["in_future", "missing_attribute", "day_full"]
    assert not any("student-" in json.dumps(x) or "score" in json.dumps(x) for x in lines)


async def test_a_dead_letter_the_broker_did_not_take_is_not_logged(
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    ingestor, _, publisher = _ingestor()
    publisher.down = True
    with pytest.raises(Unavailable):
        await ingestor.ingest([_from_the_future()])
    assert _dead_lines(logged) == []


async def test_level_changes_are_published_then_taken_out_of_the_outbox() -> None:
    log: list[str] = []
    ingestor, store, publisher = _ingestor(log)
    store.changes = [(TENANT, "1-0", _note("s1", 2))]
    await ingestor.ingest([_good()])
    assert log == ["apply 1+0", f"publish ['{LEVEL_CHANGED_TOPIC}']"]
    [change] = publisher.sent
    at_ms = int(NOW.timestamp() * 1000)
    assert dict(change.headers)["ce_id"] == f"{TENANT}:s1:2:{at_ms}".encode()
    assert store.outboxes[TENANT] == {}
    data = orjson.loads(change.value)
    assert (data["mastery"], data["previous_mastery"]) == (1.0, 0.0)
    assert b'"previous_mastery":0.0' in change.value  # a double, as the schema says
    assert data["changed_at"] == NOW.isoformat()


async def test_a_cut_off_publish_leaves_the_change_for_the_next_batch_to_publish() -> None:
    ingestor, store, publisher = _ingestor()
    store.changes = [(TENANT, "1-0", _note("s1", 2))]
    publisher.down = True
    with pytest.raises(Unavailable):
        await ingestor.ingest([_good("s1")])
    assert list(store.outboxes[TENANT]) == ["1-0"]  # applied, not yet published

    publisher.down = False
    store.changes = [(TENANT, "2-0", _note("s4", 1))]
    await ingestor.ingest([_good("s4")])
    ids = sorted(dict(m.headers)["ce_id"].decode() for m in publisher.sent)
    at_ms = int(NOW.timestamp() * 1000)
    # The backlog went with the new one.
    assert ids == [f"{TENANT}:s1:2:{at_ms}", f"{TENANT}:s4:1:{at_ms}"]
    assert store.outboxes[TENANT] == {}


def _sweep_warnings(logged: Callable[[], list[dict[str, Any]]]) -> list[str]:
    return [x["error"] for x in logged() if x["message"] == "level changes left in outboxes wait"]


async def test_a_sweep_that_fails_is_a_warning_and_the_delivery_is_answered(
    monkeypatch: pytest.MonkeyPatch, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    """A delivery sweeps the outboxes of the tenants delivered before it (when a sweep is
    due: every time, here); the broker away, its answer is its own outcome all the same,
    and the change waits for the next sweep."""
    monkeypatch.setattr(mastery.events.ingest, "_SWEEP_EVERY_S", 0.0)
    ingestor, store, publisher = _ingestor()
    await ingestor.ingest_one(_good("s1"))
    store.outboxes[TENANT] = {"1-0": _note("s1", 2)}  # a cut-off publish left it
    publisher.down = True
    elsewhere = record(Component.QUIZ, event_data("school-2", "s1", 0.8, NOW - timedelta(hours=1)))
    assert await ingestor.ingest_one(elsewhere) == (Outcome.APPLIED, None)
    assert list(store.outboxes[TENANT]) == ["1-0"]
    assert _sweep_warnings(logged) == ["kafka: down"]

    publisher.down = False
    await ingestor.ingest_one(_good("s2"))
    assert [dict(m.headers)["ce_id"] for m in publisher.sent] == [
        f"{TENANT}:s1:2:{int(NOW.timestamp() * 1000)}".encode()
    ]
    assert store.outboxes[TENANT] == {}


async def test_a_sweep_the_broker_does_not_answer_holds_a_delivery_no_longer_than_its_bound(
    monkeypatch: pytest.MonkeyPatch, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    monkeypatch.setattr(mastery.events.ingest, "_SWEEP_EVERY_S", 0.0)
    monkeypatch.setattr(mastery.events.ingest, "_SWEEP_WITHIN_S", 0.05)
    ingestor, store, publisher = _ingestor()
    await ingestor.ingest_one(_good("s1"))
    store.outboxes[TENANT] = {"1-0": _note("s1", 2)}
    publisher.paused = asyncio.Event()  # never set
    elsewhere = record(Component.QUIZ, event_data("school-2", "s1", 0.8, NOW - timedelta(hours=1)))
    answer = await asyncio.wait_for(ingestor.ingest_one(elsewhere), 1)
    assert answer == (Outcome.APPLIED, None)
    assert _sweep_warnings(logged) == ["not done in 0.05 s"]
    assert list(store.outboxes[TENANT]) == ["1-0"]


async def test_a_sweep_reads_many_outboxes_at_once() -> None:
    """Read one after another, 400 outboxes 10 ms away take 4 s, twice a sweep's time,
    and the sweep publishes none."""
    ingestor, store, publisher = _ingestor()
    store.latency = 0.01
    tenants = [f"school-{i}" for i in range(400)]
    store.outboxes[tenants[-1]] = {"1-0": _note("s1", 2)}
    await asyncio.wait_for(ingestor.publish_leftovers(tenants), 1)
    assert len(publisher.sent) == 1
    assert store.outboxes[tenants[-1]] == {}


async def _settle(*calls: asyncio.Task[object]) -> list[object]:
    """Each call's result, or the exception it raised."""
    return await asyncio.gather(*calls, return_exceptions=True)


def _deliver(ingestor: Ingestor, record: Record) -> asyncio.Task[object]:
    """One HTTP delivery, started: it runs until it waits (for Redis, or for its group)."""
    return asyncio.create_task(ingestor.ingest_one(record))


async def test_deliveries_arriving_while_a_group_is_applied_go_together_in_the_next() -> None:
    log: list[str] = []
    ingestor, store, _ = _ingestor(log)
    store.paused = asyncio.Event()
    first = _deliver(ingestor, _good("s1", "e1"))
    await asyncio.sleep(0)  # in Redis
    pairs = [("s2", "e2"), ("s3", "e3"), ("s3", "e2"), ("s5", "e5"), ("s6", "e6"), ("s7", "e7")]
    later = [_deliver(ingestor, _good(s, e)) for s, e in pairs]
    await asyncio.sleep(0)  # waiting for their turn
    assert log == []
    store.paused.set()
    results = await _settle(first, *later)
    # Six waiting: a group takes half of those inside (the other half is answered and
    # read meanwhile), then the rest.
    assert log == ["apply 1+0", "apply 3+0", "apply 3+0"]
    assert [o for o, _ in results] == [  # type: ignore[misc]
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.DUPLICATE,  # e2 again, in the same group
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    assert await ingestor.ingest_one(_good("s4", "e4")) == (Outcome.APPLIED, None)  # alone


async def test_an_unavailable_store_fails_every_delivery_of_the_group_then_recovers() -> None:
    ingestor, store, _ = _ingestor()
    store.paused = asyncio.Event()
    first = _deliver(ingestor, _good("s1", "e1"))
    await asyncio.sleep(0)
    later = [_deliver(ingestor, _good(s, e)) for s, e in (("s2", "e2"), ("s3", "e3"))]
    await asyncio.sleep(0)
    store.down = True
    store.paused.set()
    results = await _settle(first, *later)
    assert all(isinstance(r, Unavailable) for r in results), results
    store.down = False
    assert await ingestor.ingest_one(_good("s2", "e2")) == (Outcome.APPLIED, None)
    assert [o.event_id for o in store.applied] == ["e2"]


async def test_an_error_one_record_causes_fails_only_its_own_delivery() -> None:
    ingestor, store, _ = _ingestor()
    store.paused = asyncio.Event()
    store.poison = {"e2"}
    first = _deliver(ingestor, _good("s1", "e1"))
    await asyncio.sleep(0)
    later = [_deliver(ingestor, _good(s, e)) for s, e in (("s2", "e2"), ("s3", "e3"))]
    await asyncio.sleep(0)
    store.paused.set()
    results = await _settle(first, *later)
    assert results[0] == results[2] == (Outcome.APPLIED, None)
    assert isinstance(results[1], ValueError)
    assert [o.event_id for o in store.applied] == ["e1", "e3"]


async def test_a_delivery_cancelled_while_leading_its_group_leaves_no_one_waiting() -> None:
    ingestor, store, _ = _ingestor()
    store.paused = asyncio.Event()
    first = _deliver(ingestor, _good("s1", "e1"))
    await asyncio.sleep(0)
    pairs = [("s2", "e2"), ("s3", "e3"), ("s4", "e4")]
    second, third, fourth = (_deliver(ingestor, _good(s, e)) for s, e in pairs)
    await asyncio.sleep(0)
    first.cancel()  # its request gone while its group is in Redis: the next one leads
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # second now leads [second, third] (half of the three), in Redis
    second.cancel()  # and is gone too: third is answered 503, not left waiting
    store.paused.set()
    results = await _settle(first, second, third, fourth)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[2], Unavailable)
    assert results[3] == (Outcome.APPLIED, None)
