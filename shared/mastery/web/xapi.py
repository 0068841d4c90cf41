"""``POST /xapi/statements`` and ``PUT /xapi/statements?statementId=<id>``: xAPI
statements from a learning platform or an LRS; ``GET /xapi/about``: the versions spoken.

Each statement becomes a record of ``mastery.xapi`` and takes the ingest path every event
takes (validation, idempotency on the statement id, audit), with the caller's tenant. As
an LRS does, a batch is all or nothing: one invalid statement refuses the whole request
(400) and nothing is applied, and so does a batch naming one statement id twice (xAPI
1.0.3, Communication 2.1.2), or one statement whose id is held for a statement that says
otherwise (409: the one held is kept, unchanged); the answer is the array of statement
ids, in order (a PUT stores one statement, and answers 204). A statement resent as it
was is answered as if stored, and changes nothing.

The valid statements are produced to ``mastery.xapi`` first, the caller's tenant in the
``mastery_tenant`` header, and the broker's acknowledgement awaited (else 503, nothing
applied): the topic holds every statement the engine took, so ``mastery rebuild``
restores them. They are applied here too, so that the answer follows the state; the
topic's consumers then meet them as duplicates (docs/decisions.md).
"""

from __future__ import annotations

import re
import uuid
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from mastery.events.codec import JSON
from mastery.events.xapi import TENANT_HEADER
from mastery.metrics import dlq_reason
from mastery.policy import Action
from mastery.ports import OutMessage, Record
from mastery.store import Outcome
from mastery.topics import XAPI_TOPIC
from mastery.web.app import model_response, read_json
from mastery.web.auth import precheck
from mastery.web.problems import Problem
from mastery.web.responses import About, StatementIds

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request

    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = [
    "RESPONSE_HEADERS",
    "VERSION",
    "VERSION_HEADER",
    "about",
    "post_statements",
    "put_statement",
]

VERSION_HEADER = "X-Experience-API-Version"
#: The latest patch version of the specification followed (xAPI 1.0.3, Communication 3.3).
VERSION = "1.0.3"
#: On every answer of the xAPI resources, errors included (Communication 3.3).
RESPONSE_HEADERS: Mapping[str, str] = MappingProxyType({VERSION_HEADER: VERSION})
_VERSION = re.compile(r"^1\.0(\.\d+)?$")
_MAX_STATEMENTS = 1000  # as the Statements model says


async def about(request: Request, ctx: Context) -> Response:
    """``GET /xapi/about``: the xAPI versions the engine speaks, one per major version.

    Without a token and whatever the version header says (xAPI 1.0.3, Communication 2.8:
    an LRS SHOULD allow unauthenticated access, MUST NOT reject it for its version
    header): a client reads it to choose a version before it has credentials.
    """
    return model_response(About(version=[VERSION]))


async def post_statements(request: Request, ctx: Context) -> Response:
    """One statement or an array; the answer is their ids, in order."""
    principal = await _caller(request, ctx)
    raw = await read_json(request, ctx.resources.settings.max_body_bytes)
    statements = raw if isinstance(raw, list) else [raw]
    if not statements or len(statements) > _MAX_STATEMENTS:
        raise Problem(400, f"send 1 to {_MAX_STATEMENTS} statements")
    stored = _now(ctx)
    records = [_record(i, s, stored) for i, s in enumerate(statements)]
    if repeated := _repeated(records):
        raise Problem(
            400, "a statement id repeats in the batch; none was stored", statements=repeated
        )
    await _ingest(ctx, principal, records)
    return model_response(StatementIds([r.headers["ce_id"].decode() for r in records]))


async def put_statement(request: Request, ctx: Context) -> Response:
    """``PUT /xapi/statements?statementId=<id>``: one statement stored under that id; 204.

    What the ``tincan`` library sends for a statement with an id (Open edX's
    event-routing-backends, batching off). The same path as a POST of one statement. An id
    already held is answered 204 and changes nothing when the statement says the same
    (``mastery.events.comparison``), 409 when it says otherwise.
    """
    principal = await _caller(request, ctx)
    ids = request.query_params.getlist("statementId")
    sid = _canonical(ids[0]) if len(ids) == 1 else None
    if sid is None:
        raise Problem(400, "statementId must be given once, a UUID")
    raw = await read_json(request, ctx.resources.settings.max_body_bytes)
    if not isinstance(raw, dict):
        raise Problem(400, "PUT stores one statement, a JSON object", statements=[{"index": 0}])
    if "id" not in raw:
        raw = {"id": sid, **raw}
    elif not isinstance(raw["id"], str) or _canonical(raw["id"]) != sid:
        reason = "the statement's id is not the statementId parameter"
        raise Problem(400, reason, statements=[{"index": 0, "reason": reason}])
    await _ingest(ctx, principal, [_record(0, raw, _now(ctx))])
    return Response(status_code=204)


async def _caller(request: Request, ctx: Context) -> Principal:
    """The caller, allowed to send statements, with a version it speaks; 401/403/400."""
    # HTTP Basic too: the LRS clients that feed an engine (Moodle's logstore_xapi, Ralph)
    # speak nothing else, and xAPI requires an LRS to take it (Communication 4.0).
    principal = await ctx.principal(request, basic=True)
    precheck(principal, Action.INGEST)
    version = request.headers.get(VERSION_HEADER, "")
    if not _VERSION.fullmatch(version):
        raise Problem(400, f"{VERSION_HEADER} must be 1.0.x, got {version[:20]!r}")
    return principal


async def _ingest(ctx: Context, principal: Principal, records: list[Record]) -> None:
    """All or nothing: 400 naming each invalid statement, 409 each one whose id is held
    for a statement that says otherwise, else every one is put on the topic (503 unless
    the broker acknowledges) and then applied, in the caller's tenant."""
    ingestor = ctx.resources.ingestor
    batch = ingestor.prepare(records, tenant=principal.tenant)
    refused = [
        {"index": i, "reason": slot[1]}
        for i, slot in enumerate(batch.slots)
        if isinstance(slot, tuple) and slot[0] is Outcome.REJECTED
    ]
    if refused:
        raise Problem(400, "invalid xAPI statement(s); none was stored", statements=refused)
    ctx.students.extend(sorted({obs.student_id for obs, _ in batch.accepted}))
    held = set(await ctx.resources.store.conflicting([obs for obs, _ in batch.accepted]))
    places = [i for i, slot in enumerate(batch.slots) if isinstance(slot, int) and slot in held]
    if places:
        raise _conflict(records, places, "none was stored")
    await ctx.resources.publisher.publish([_message(r, principal.tenant) for r in records])
    results = await ingestor.apply(batch)
    # Another request stored a different statement under the id in between: the apply
    # refused this one (and dead-lettered it); the others of the request are stored.
    raced = [i for i, (_, why) in enumerate(results) if why and dlq_reason(why) == "conflict"]
    if raced:
        raise _conflict(records, raced, "the request's other statements were stored")


def _conflict(records: list[Record], places: list[int], stored: str) -> Problem:
    """409 (xAPI 1.0.3, Communication 2.1.1, 2.1.2): each statement whose id is held for
    one that says otherwise; the one held is kept, unchanged."""
    ids = [records[i].headers["ce_id"].decode() for i in places]
    reason = "a different statement is held under this id; it is kept, unchanged"
    return Problem(
        409,
        f"a different statement is held under id {', '.join(ids)}; {stored}",
        statements=[
            {"index": i, "id": sid, "reason": reason} for i, sid in zip(places, ids, strict=True)
        ],
    )


def _message(record: Record, tenant: str) -> OutMessage:
    """A statement as ``mastery.xapi`` keeps it: the tenant in a header, keyed by student."""
    headers = [*record.headers.items(), (TENANT_HEADER, tenant.encode())]
    return OutMessage(XAPI_TOPIC, record.value, record.key, headers)


def _now(ctx: Context) -> str:
    """The time the statements are taken, as ``stored`` holds it (RFC 3339, UTC)."""
    return ctx.resources.clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _record(index: int, statement: Any, stored: str) -> Record:
    if not isinstance(statement, dict):
        raise Problem(400, "a statement is a JSON object", statements=[{"index": index}])
    # As an LRS does: a statement without an id gets one, and the answer names it.
    sid = statement.get("id")
    if not isinstance(sid, str):
        sid = str(uuid.uuid4())
        statement = {"id": sid, **statement}
    # As an LRS does too (xAPI Data 2.4.7, 2.4.8): `stored` is when it took the statement,
    # and one without a `timestamp` gets that time. Written before the statement goes to
    # the topic, so every reader of it (this request, the topic's consumers, a rebuild)
    # dates it alike, where each dated it by its own clock.
    statement = {**statement, "stored": stored}
    if statement.get("timestamp") is None:
        statement["timestamp"] = stored
    headers = {"ce_id": sid.encode(), "content-type": JSON.encode()}
    return Record(XAPI_TOPIC, orjson.dumps(statement), _student(statement), headers)


def _repeated(records: list[Record]) -> list[dict[str, Any]]:
    """The statements whose id an earlier one of the batch has: the store would count the
    second as a duplicate of the first and drop it, so the batch is refused instead."""
    first: dict[str, int] = {}
    repeated = []
    for index, record in enumerate(records):
        sid = record.headers["ce_id"].decode()
        # Compared as the store keys them (the UUID, whatever its spelling).
        key = _canonical(sid) or sid
        if key in first:
            repeated.append({"index": index, "reason": f"id {sid} is statement {first[key]}'s"})
        else:
            first[key] = index
    return repeated


def _canonical(sid: str) -> str | None:
    """``sid`` as the engine keys a statement (``str(UUID)``); ``None``: not a UUID."""
    try:
        return str(uuid.UUID(sid))
    except ValueError:
        return None


def _student(statement: dict[str, Any]) -> bytes | None:
    """The record key the topic recommends: the student (``actor.account.name``)."""
    actor = statement.get("actor")
    account = actor.get("account") if isinstance(actor, dict) else None
    name = account.get("name") if isinstance(account, dict) else None
    return name.encode() if isinstance(name, str) else None
