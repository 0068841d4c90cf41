"""OpenAPI 3.1 documents built from the pydantic models the handlers validate and answer with.

Each function serves the part for its own routes (``FunctionApp``: ``GET /openapi.json``);
the gateway and ``mastery openapi`` merge the parts of every function it routes to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mcp_types import JSONRPCError
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from mastery.batch.messages import BATCH_ID
from mastery.events.xapi import Statement, Statements
from mastery.web import responses as r
from mastery.web.problems import PROBLEM_JSON
from mastery.web.requests import (
    AuditRequest,
    BatchRequest,
    CompareRequest,
    HistoryRequest,
    JsonRpcMessage,
    ProcessRequest,
    QueryRequest,
    StudentRequest,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["OPERATIONS", "TITLE", "Operation", "document", "gateway_document", "merge", "rendered"]

TITLE = "Mastery Engine"
OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{model}"
_BEARER = "bearerAuth"
_BASIC = "basicAuth"
#: The routes that also take the token as the password of HTTP Basic (xAPI clients).
_BASIC_ROUTES = frozenset({"POST /xapi/statements", "PUT /xapi/statements"})
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: its request body and the documents of its success answers."""

    summary: str
    body: type[BaseModel] | None
    ok: dict[int, type[BaseModel] | None]
    """Success status -> response model (``None``: no JSON body)."""
    errors: tuple[int, ...] = (400, 401, 403, 404, 413, 415, 422, 429, 503)
    auth: bool = True
    extra_media: dict[str, str] = field(default_factory=dict)
    """More media types of the first success answer: media type -> description."""
    request_media: str = "application/json"
    jsonrpc_errors: tuple[int, ...] = ()
    """Error statuses that may instead be a JSON-RPC error (``application/json``): the MCP
    transport's own, which go out as the SDK writes them."""
    error_text: dict[int, str] = field(default_factory=dict)
    """What an error status means on this route, where it is not the usual."""


def _document(summary: str, body: type[BaseModel], answer: type[BaseModel]) -> Operation:
    """A route answering one JSON document (200), or one of the usual errors."""
    return Operation(summary, body, {200: answer})


OPERATIONS: dict[str, Operation] = {
    "POST /mastery/query": _document(
        "A student's explained mastery score", QueryRequest, r.MasteryDocument
    ),
    "POST /predictions/next-week": _document(
        "The student's mastery predicted 7 days ahead", StudentRequest, r.PredictionDocument
    ),
    "POST /recommendations/adaptive": _document(
        "What the student should study first", StudentRequest, r.RecommendationsDocument
    ),
    "POST /analytics/mastery-history": Operation(
        "The student's mastery over time (json, csv or ndjson)",
        HistoryRequest,
        {200: r.HistoryDocument},
        extra_media={
            "text/csv": "one row per period (format: csv)",
            "application/x-ndjson": "one JSON row per line (format: ndjson)",
        },
    ),
    "POST /analytics/compare": _document(
        "The student next to their cohort", CompareRequest, r.CompareDocument
    ),
    "POST /process": _document(
        "Service-to-service intents: calculation, prediction, recommendations",
        ProcessRequest,
        r.ProcessDocument,
    ),
    "POST /gdpr/export": _document(
        "Everything held about a student", StudentRequest, r.ExportDocument
    ),
    "POST /gdpr/erase": _document(
        "Erase a student's data (admin)", StudentRequest, r.ErasureDocument
    ),
    "POST /audit/recent": _document(
        "The tenant's recent audit records (admin)", AuditRequest, r.AuditDocument
    ),
    "POST /batch/mastery": Operation(
        "Mastery of many students: answered at once, or queued (202)",
        BatchRequest,
        {200: r.BatchDone, 202: r.BatchAccepted},
        errors=(400, 401, 403, 413, 415, 422, 429, 503),
    ),
    "GET /batch/mastery/{batch_id}": Operation(
        "A queued batch's status and, once final, its results",
        None,
        {200: r.BatchStatusDocument},
        errors=(401, 403, 404, 429, 503),
    ),
    "POST /mcp": Operation(
        "MCP (JSON-RPC over Streamable HTTP, stateless): the engine's operations as tools",
        JsonRpcMessage,
        {200: None, 202: None},
        errors=(400, 401, 403, 404, 406, 413, 415, 422, 429, 503),
        jsonrpc_errors=(400, 404, 406),
        # A tool call the policy refuses is a tool error (200), not this.
        error_text={403: "The Origin header names an origin not in MASTERY_MCP_ALLOWED_ORIGINS"},
    ),
    "POST /xapi/statements": Operation(
        "xAPI statements (one or an array); answers their ids, as an LRS does",
        Statements,
        {200: r.StatementIds},
        errors=(400, 401, 403, 409, 413, 415, 429, 503),
    ),
    "PUT /xapi/statements": Operation(
        "One xAPI statement stored under the statementId parameter (204), as an LRS does",
        Statement,
        {204: None},
        errors=(400, 401, 403, 409, 413, 415, 429, 503),
    ),
    "GET /xapi/about": Operation(
        "The xAPI versions the engine speaks, as an LRS's About resource (no token)",
        None,
        {200: r.About},
        errors=(),
        auth=False,
    ),
    "POST /": Operation(
        "One Kafka record, as Knative KafkaSource (CloudEvents) or the kafka-connector "
        "delivers it; bad records are dead-lettered and answered 200",
        None,
        {200: r.EventOutcome},
        errors=(413, 503),
        auth=False,
        request_media="*/*",
    ),
}


def _schemas() -> tuple[dict[tuple[type[BaseModel], str], Any], dict[str, Any]]:
    requests = {op.body for op in OPERATIONS.values() if op.body is not None}
    answers = {m for op in OPERATIONS.values() for m in op.ok.values() if m is not None}
    answers.add(r.ProblemDocument)
    if any(op.jsonrpc_errors for op in OPERATIONS.values()):
        answers.add(JSONRPCError)
    pairs: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        *((m, "validation") for m in sorted(requests, key=lambda m: m.__name__)),
        *((m, "serialization") for m in sorted(answers, key=lambda m: m.__name__)),
    ]
    refs, defs = models_json_schema(pairs, ref_template=_REF)
    return {
        (m, mode): s
        for (m, mode), s in refs.items()
        if isinstance(m, type) and issubclass(m, BaseModel)
    }, defs.get("$defs", {})


def _headers(*names: str) -> dict[str, Any]:
    return {n: {"$ref": f"#/components/headers/{n}"} for n in names}


_HEADERS: dict[str, Any] = {
    "X-Correlation-ID": {
        "description": "The request's correlation id (sent, or made up), in logs and audit",
        "schema": {"type": "string"},
    },
    "RateLimit-Limit": {"description": "Requests a minute", "schema": {"type": "string"}},
    "RateLimit-Remaining": {"description": "Left in this window", "schema": {"type": "string"}},
    "RateLimit-Reset": {"description": "Seconds to the window's end", "schema": {"type": "string"}},
    "RateLimit-Policy": {"description": "`<limit>;w=60`", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}},
    "X-Experience-API-Version": {
        "description": "The xAPI version followed (1.0.3), on every answer of the xAPI routes",
        "schema": {"type": "string"},
    },
    "WWW-Authenticate": {
        "description": "The challenge: Bearer; on the xAPI routes Bearer and Basic",
        "schema": {"type": "string"},
    },
}
_LIMITS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")
_ERROR_TEXT = {
    400: "The body is not JSON (for xAPI: or a statement is invalid; `statements` says which)",
    401: "No bearer token, or a bad one",
    403: "The policy does not let the caller do this",
    404: "Nothing held for this in the caller's tenant",
    406: "The Accept header names neither application/json nor text/event-stream",
    409: "A different xAPI statement is held under a statement's id (`statements` says which):"
    " the one held is kept, unchanged",
    413: "The body is larger than MASTERY_MAX_BODY_BYTES",
    415: "The body is not application/json",
    422: "The body does not validate; `errors` names the fields",
    429: "Over the caller's rate limit",
    503: "Redis, the broker or the JWT secret is unavailable",
}


def _operation(key: str, op: Operation, refs: dict[tuple[type[BaseModel], str], Any]) -> Any:
    method, path = key.split(" ", 1)
    out: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
    }
    if path == "/xapi/statements":
        out["parameters"] = [_parameter("X-Experience-API-Version", "header", r"^1\.0(\.[0-9]+)?$")]
    if key == "PUT /xapi/statements":
        out["parameters"].append(_parameter("statementId", "query", _UUID))
    if "{batch_id}" in path:
        out["parameters"] = [_parameter("batch_id", "path", BATCH_ID.pattern)]
    if op.body is not None:
        schema = refs[(op.body, "validation")]
        out["requestBody"] = {"required": True, "content": {op.request_media: {"schema": schema}}}
    elif op.request_media == "*/*":
        out["requestBody"] = {
            "required": True,
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    responses: dict[str, Any] = {}
    limit_headers = _LIMITS if op.auth else ()
    xapi = ("X-Experience-API-Version",) if path.startswith("/xapi/") else ()
    for status, model in op.ok.items():
        content: dict[str, Any] = {}
        if model is not None:
            content["application/json"] = {"schema": refs[(model, "serialization")]}
        elif key == "POST /mcp" and status == 200:
            content = {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {"schema": {"type": "string"}},
            }
        if status == min(op.ok):
            for media in op.extra_media:
                content[media] = {"schema": {"type": "string"}}
        headers = ("X-Correlation-ID", *xapi, *limit_headers)
        responses[str(status)] = _response(_success_text(status, op), headers, content)
    problem = {PROBLEM_JSON: {"schema": refs[(r.ProblemDocument, "serialization")]}}
    jsonrpc = {"application/json": {"schema": refs.get((JSONRPCError, "serialization"))}}
    for status in op.errors:
        headers = ("X-Correlation-ID", *xapi, *_error_headers(status, op))
        text = op.error_text.get(status, _ERROR_TEXT[status])
        if status in op.jsonrpc_errors:
            text = f"{text}; or the MCP transport's JSON-RPC error"
            responses[str(status)] = _response(text, headers, {**problem, **jsonrpc})
        else:
            responses[str(status)] = _response(text, headers, problem)
    if op.auth:
        out["security"] = [{_BEARER: []}, *([{_BASIC: []}] if key in _BASIC_ROUTES else [])]
    out["responses"] = responses
    return {method.lower(): out}


def _parameter(name: str, where: str, pattern: str) -> dict[str, Any]:
    """A required string parameter (``where``: header, path, query) matching ``pattern``."""
    return {
        "name": name,
        "in": where,
        "required": True,
        "schema": {"type": "string", "pattern": pattern},
    }


def _response(description: str, headers: Iterable[str], content: dict[str, Any]) -> Any:
    """One entry of an operation's ``responses``: what it means, its headers, its bodies."""
    entry: dict[str, Any] = {"description": description, "headers": _headers(*headers)}
    if content:
        entry["content"] = content
    return entry


def _error_headers(status: int, op: Operation) -> tuple[str, ...]:
    """The headers of an error answer besides ``X-Correlation-ID``."""
    headers: tuple[str, ...] = ("WWW-Authenticate",) if status == 401 else ()
    if status in (429, 503):
        headers += ("Retry-After",)
    if status in (403, 404, 422, 429) and op.auth:
        headers += _LIMITS
    return headers


def _success_text(status: int, op: Operation) -> str:
    if status == 202:
        return "Accepted"
    if status == 204:
        return "Stored (or held already, the same statement: nothing changed)"
    if op.extra_media:
        return "OK; also " + "; ".join(f"{m}: {d}" for m, d in op.extra_media.items())
    return "OK"


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.replace("-", "_").split("/") if w]
    return "_".join([method.lower(), *words]) if words else f"{method.lower()}_root"


def document(title: str, route_keys: Iterable[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes ``route_keys`` (those with an operation)."""
    refs, defs = _schemas()
    paths: dict[str, Any] = {}
    for key in route_keys:
        op = OPERATIONS.get(key)
        if op is None:
            continue
        path = key.split(" ", 1)[1]
        paths.setdefault(path, {}).update(_operation(key, op, refs))
    used = _used(paths, defs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {k: defs[k] for k in sorted(used)},
            "headers": _HEADERS,
            "securitySchemes": {
                _BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                _BASIC: {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Any user name; the password is the bearer token (JWT)",
                },
            },
        },
    }


def merge(title: str, parts: Iterable[dict[str, Any]], route_keys: Iterable[str]) -> dict[str, Any]:
    """One document of ``parts``, keeping the operations of ``route_keys`` (what a gateway routes).

    Raises:
        ValueError: two parts describe one schema differently.
    """
    wanted = {tuple(k.split(" ", 1)) for k in route_keys}
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for part in parts:
        for path, item in part.get("paths", {}).items():
            for method, op in item.items():
                if (method.upper(), path) in wanted:
                    paths.setdefault(path, {})[method] = op
        for name, schema in part.get("components", {}).get("schemas", {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"schema {name} differs between functions")
    merged = document(title, ())
    merged["paths"] = {p: paths[p] for p in sorted(paths)}
    used = _used(merged["paths"], schemas)
    merged["components"]["schemas"] = {k: schemas[k] for k in sorted(used)}
    return merged


def _used(node: Any, defs: dict[str, Any]) -> set[str]:
    """Names of the schemas ``node`` refers to, transitively."""
    found: set[str] = set()
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    todo.append(defs[name])
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return found


def gateway_document() -> dict[str, Any]:
    """What the gateway serves, made here from the registry (``mastery openapi``)."""
    from mastery.registry import FUNCTIONS

    routes = [route for spec in FUNCTIONS for route in spec.routes]
    parts = [document(spec.name, spec.routes) for spec in FUNCTIONS if spec.routes]
    return merge(TITLE, parts, routes)


def rendered(doc: dict[str, Any]) -> str:
    """The committed form: indented JSON, one trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
