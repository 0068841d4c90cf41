"""``FunctionApp``: what every HTTP function shares at its edge.

Routing of its own paths plus ``/health``, ``/ready`` and ``/metrics``; correlation ids;
problem+json for every error; request metrics; one access log line per request; the
caller's W3C ``traceparent`` continued by a server span (``mastery.tracing``). A
function's ``main.py`` wraps one of these in ``@functions_framework.aio.http``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from mastery import tracing
from mastery.errors import Unavailable, why
from mastery.fields import MAX_JSON_DEPTH, too_deep
from mastery.logs import access_line, logger
from mastery.metrics import READY, REQUEST_ERRORS, REQUEST_LATENCY, REQUESTS
from mastery.web.access import access_record
from mastery.web.limits import enforce_rate_limit
from mastery.web.problems import Problem, from_validation
from mastery.web.routing import Routes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping
    from datetime import datetime

    from starlette.requests import Request

    from mastery.batch.runner import BatchRunner
    from mastery.domain import ScoringModel
    from mastery.events.access_log import AccessLog
    from mastery.events.ingest import Ingestor
    from mastery.events.kafka import KafkaPublisher
    from mastery.ports import Clock
    from mastery.settings import Settings
    from mastery.store import RedisStore
    from mastery.store.batches import BatchStore
    from mastery.store.ratelimit import RateLimiter
    from mastery.web.auth import Authenticator, Principal

__all__ = [
    "Context",
    "FunctionApp",
    "Services",
    "correlation_id_of",
    "json_response",
    "model_response",
    "read_body",
    "read_json",
    "read_limited",
    "validate",
    "write_access",
]

M = TypeVar("M", bound=BaseModel)
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Liveness and readiness, also at OpenFaaS's own paths: the Community Edition probes
# /_/health (both probes) and reads no annotation that would point it elsewhere.
_HEALTH = ("/health", "/_/health")
_READY = ("/ready", "/_/ready")
#: The methods a request metric is labelled with; any other is "other" (a label per
#: method a client makes up would grow the series without bound).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Services(Protocol):
    """What the HTTP functions use of the process's adapters (``mastery.bootstrap`` builds
    them; a function's ``main.py`` hands them over as the app's ``provider``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def model(self) -> ScoringModel: ...
    @property
    def store(self) -> RedisStore: ...
    @property
    def publisher(self) -> KafkaPublisher: ...
    @property
    def ingestor(self) -> Ingestor: ...
    @property
    def authenticator(self) -> Authenticator | None: ...
    @property
    def rate_limiter(self) -> RateLimiter: ...
    @property
    def access_log(self) -> AccessLog: ...
    @property
    def batches(self) -> BatchStore: ...
    @property
    def runner(self) -> BatchRunner: ...


@dataclass(slots=True)
class Context:
    """Per-request handles for a handler, and what the access audit records of it."""

    resources: Services
    correlation_id: str
    function: str
    response_headers: dict[str, str] = field(default_factory=dict)
    """Added to whatever the handler answers (rate-limit headers, for one)."""
    caller: Principal | None = None
    students: list[str] = field(default_factory=list)
    """The students whose data the request asks for (the handler names them)."""
    path_params: dict[str, str] = field(default_factory=dict)
    """``{name}`` segments of the matched route, unvalidated."""
    log_fields: dict[str, str] = field(default_factory=dict)
    """Added to the request's access line (why a token was refused: ``auth_failure``)."""
    _prefetched: dict[str, dict[bytes | str, bytes | str]] = field(default_factory=dict)

    def authenticate(self, request: Request, *, basic: bool = False) -> Principal:
        """The verified caller (401 problem otherwise), not yet counted against its rate limit.

        ``basic``: the token may also come as the password of HTTP Basic credentials
        (``Authenticator.authenticate``); only routes whose clients need it ask for it.
        """
        auth = self.resources.authenticator
        if auth is None:
            raise Unavailable("MASTERY_JWT_SECRET is not configured")
        try:
            self.caller = auth.authenticate(request.headers.get("authorization"), basic=basic)
        except Problem as problem:  # kept here: a handler may answer it as another Problem
            self.log_fields.update(problem.log_fields)
            raise
        return self.caller

    async def principal(self, request: Request, *, basic: bool = False) -> Principal:
        """The verified caller, counted against its rate limit; 401 or 429 problem otherwise."""
        principal = self.authenticate(request, basic=basic)
        await self.count(principal)
        return principal

    async def count(self, principal: Principal, read: str | None = None) -> None:
        """Count the request against ``principal``'s rate limit (429 problem past it).

        ``read``: a hash of the caller's tenant the handler will read; it is read in the
        same Redis call and kept for ``prefetched``.
        """
        res = self.resources
        headers, fields = await enforce_rate_limit(principal, res.rate_limiter, res.settings, read)
        self.response_headers.update(headers)
        if read is not None and fields is not None:
            self._prefetched[read] = fields

    def prefetched(self, key: str) -> dict[bytes | str, bytes | str] | None:
        """The hash ``key`` as ``count(..., read=key)`` read it (``{}``: none held), once;
        ``None`` when it was not read along."""
        return self._prefetched.pop(key, None)


class FunctionApp:
    """One function's HTTP surface.

    Args:
        name: the function's name (registry, logs, metrics).
        routes: ``{"POST /mastery/query": handler}``; a path may hold ``{name}``
            segments (``Context.path_params``).
        uses_kafka: whether ``/ready`` must also see the broker (implied by ``uses_auth``).
        uses_auth: whether the function verifies callers (without a JWT secret it does
            not start), and whether requests to its routes are data accesses, each
            recorded by the access audit.
        audits_requests: whether the app writes one access record per request; ``False``
            for a function whose handler records each data access itself (``write_access``),
            as the MCP function does for each tool call of a request.
        provider: where the process's adapters come from (``mastery.bootstrap.resources``
            in a function's ``main.py``; tests inject their own). One with a
            ``check(name, authenticates=...)`` has it called here, at the function's start:
            settings that do not validate, or no JWT secret for a function that verifies
            callers, stop the process with one line, not a 500 or 503 on each request.
        path_headers: ``{path: headers}`` added to every answer on that path, whatever
            its method or outcome (an error, a 405, a failed audit): a protocol's own,
            such as xAPI's version header.
        public: route keys that take no token and answer no data (a protocol's own
            discovery document, such as xAPI's ``GET /xapi/about``): served as the
            others are (metrics, access line, path headers) but not access-audited,
            as ``/health`` and ``/openapi.json`` are not: there is no caller and no
            student to record, and the answer must not fail with the broker.
        deliveries: route keys that take event deliveries (an event handler's ``POST /``
            beside the routes of a function that also has callers, as ``on-xapi``'s):
            trusted like the topic, not access-audited, as the event handlers are not;
            each event's outcome is in the tenant's event audit.
    """

    def __init__(
        self,
        name: str,
        routes: Mapping[str, Callable[[Request, Context], Awaitable[Response]]],
        *,
        provider: Callable[[str], Awaitable[Services]],
        uses_kafka: bool = False,
        uses_auth: bool = True,
        audits_requests: bool = True,
        path_headers: Mapping[str, Mapping[str, str]] | None = None,
        public: Collection[str] = (),
        deliveries: Collection[str] = (),
    ) -> None:
        self.name = name
        self._routes = Routes(routes)
        self._route_keys = tuple(routes)
        self._openapi: dict[str, Any] | None = None
        self._uses_kafka = uses_kafka
        self._uses_auth = uses_auth
        self._audits_requests = audits_requests
        self._path_headers = dict(path_headers or {})
        self._public = frozenset(public)
        self._unaudited = self._public | frozenset(deliveries)
        if unknown := self._unaudited - set(routes):
            raise ValueError(f"public or delivery routes it does not serve: {sorted(unknown)}")
        self._log = logger(name)
        self._resources = provider
        # Exported at 0 from the start (the 5xx alert's terms): ``increase()`` and
        # ``rate()`` would not see a new pod's first answers on a series born with them.
        for route in self._route_keys:
            REQUEST_ERRORS.labels(name, route)
            REQUEST_LATENCY.labels(name, route)
        if (check := getattr(provider, "check", None)) is not None:
            check(name, authenticates=uses_auth)

    async def __call__(self, request: Request) -> Response:
        path = _url_path(request).rstrip("/") or "/"
        if path in _HEALTH:
            return json_response({"status": "ok", "function": self.name})
        if path == "/metrics":
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
        if path in _READY:
            return await self._ready()
        if path == "/openapi.json" and request.method == "GET":
            return json_response(self.openapi())
        if not tracing.enabled():
            return await self._dispatch(request, path)
        parent = tracing.extract_http(request.headers)
        with tracing.span(
            f"{request.method} {path}", kind=tracing.SpanKind.SERVER, parent=parent
        ) as span:
            response = await self._dispatch(request, path)
            tracing.answered(span, response.status_code)
            return response

    @property
    def public(self) -> frozenset[str]:
        """The route keys served without a token and not access-audited."""
        return self._public

    @property
    def deliveries(self) -> frozenset[str]:
        """The route keys that take event deliveries: not access-audited."""
        return self._unaudited - self._public

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of this function's routes."""
        if self._openapi is None:
            # Every function's models: loaded on the first GET /openapi.json, not at start
            # (a cold start pays only for what the function itself validates).
            from mastery.web.openapi import document

            self._openapi = document(self.name, self._route_keys)
        return self._openapi

    async def _dispatch(self, request: Request, path: str) -> Response:
        started = time.perf_counter()
        correlation_id = correlation_id_of(request.headers)
        # Metrics and the audit name the route's template, not the path, and a method
        # they know: bounded labels.
        method = request.method if request.method in _METHODS else "other"
        route = f"{method} {path}"
        matched = self._routes.match(request.method, path)
        handler = matched[1] if matched else None
        ctx: Context | None = None
        try:
            if matched is None:
                served = self._routes.serves(path)
                if served is not None:
                    route = f"{method} {served[0]}"
                    allow = self._routes.methods(path)
                    raise Problem(
                        405,
                        f"{request.method} is not allowed on {path}",
                        headers={"Allow": ", ".join(allow)},
                    )
                route = "unmatched"
                raise Problem(404, f"no route {path}")
            route, handler, params = matched
            ctx = Context(await self._resources(self.name), correlation_id, self.name)
            ctx.path_params = params
            response = await handler(request, ctx)
        except Problem as problem:
            response = problem.response(correlation_id)
        except Unavailable as exc:
            self._log.warning("dependency unavailable", extra=_extra(correlation_id, exc))
            response = Problem.unavailable().response(correlation_id)
        except Exception as exc:
            self._log.exception("unhandled error", extra=_extra(correlation_id, exc))
            tracing.failed(exc)
            response = Problem(500, "internal error").response(correlation_id)
        audited = self._uses_auth and self._audits_requests and route not in self._unaudited
        if audited and handler is not None and ctx is not None:
            response = await self._audit(ctx, route, response)
        if ctx is not None:
            response.headers.update(ctx.response_headers)
        if (headers := self._path_headers.get(path)) is not None:
            response.headers.update(headers)
        response.headers["X-Correlation-ID"] = correlation_id
        status = response.status_code
        elapsed = time.perf_counter() - started
        if tracing.enabled():
            tracing.name_route(route)
        REQUESTS.labels(self.name, route, method, str(status)).inc()
        REQUEST_LATENCY.labels(self.name, route).observe(elapsed)
        if status >= 500:
            REQUEST_ERRORS.labels(self.name, route).inc()
        if self._log.log_level <= logging.INFO:  # LOG_LEVEL=WARNING: no access lines
            caller = ctx.caller if ctx is not None else None
            access_line(
                self.name,
                {
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "correlation_id": correlation_id,
                    "trace_id": tracing.trace_id(),
                    "subject": caller.subject if caller else None,
                    "tenant": caller.tenant if caller else None,
                    **(ctx.log_fields if ctx is not None else {}),
                },
            )
        return response

    async def _audit(self, ctx: Context, route: str, response: Response) -> Response:
        """Write the access record; without it, no data leaves (503)."""
        try:
            await write_access(ctx, route, response.status_code)
        except Unavailable as exc:
            self._log.error("access audit not written", extra=_extra(ctx.correlation_id, exc))
            return Problem.unavailable("the access audit is unavailable, retry later").response(
                ctx.correlation_id
            )
        return response

    async def _ready(self) -> Response:
        checks: dict[str, str] = {}
        try:
            res = await self._resources(self.name)
        except Exception as exc:  # settings that do not parse, for one
            READY.labels(self.name, "configured").set(0)
            return Problem(503, f"not configured: {type(exc).__name__}").response()
        READY.labels(self.name, "configured").set(1)
        checks["redis"] = await _check(res.store.ping())
        if self._uses_kafka or self._uses_auth:  # data functions write the access audit
            checks["kafka"] = await _check(res.publisher.check())
        if self._uses_auth:
            checks["jwt_secret"] = "ok" if res.authenticator else "MASTERY_JWT_SECRET not set"
        for check, state in checks.items():
            READY.labels(self.name, check).set(1 if state == "ok" else 0)
        if all(v == "ok" for v in checks.values()):
            return json_response({"status": "ready", "checks": checks})
        return Problem.unavailable("not ready", checks=checks).response()


def correlation_id_of(headers: Mapping[str, str]) -> str:
    """The caller's ``X-Correlation-ID`` when it is safe to echo and log, else a new one."""
    header = headers.get("x-correlation-id", "")
    return header if _CORRELATION.fullmatch(header) else uuid.uuid4().hex


async def write_access(ctx: Context, route: str, status: int, at: datetime | None = None) -> None:
    """Record one data access (``ctx``'s caller and students) in the access audit, at
    ``at`` (default: now).

    Raises:
        Unavailable: the broker did not acknowledge it; send no data.
    """
    record = access_record(
        function=ctx.function,
        route=route,
        correlation_id=ctx.correlation_id,
        principal=ctx.caller,
        students=ctx.students,
        status=status,
        at=at or ctx.resources.clock(),
    )
    await ctx.resources.publisher.publish([record])


def _url_path(request: Request) -> str:
    """``request.url.path``, without building the URL (its host parsing is ~8 us a request):
    the scope's path with the characters a URL would escape escaped."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


async def _check(probe: Awaitable[None]) -> str:
    try:
        await probe
    except Unavailable as exc:
        return why(exc)
    return "ok"


def _extra(correlation_id: str, exc: BaseException) -> dict[str, str]:
    return {"correlation_id": correlation_id, "error": f"{type(exc).__name__}: {exc}"}


def json_response(doc: object, status: int = 200) -> Response:
    """The edge's own small documents (health, readiness, the OpenAPI document)."""
    return Response(orjson.dumps(doc), status, media_type="application/json")


def model_response(doc: BaseModel, status: int = 200) -> Response:
    """A documented answer, serialized by its model (``mastery.web.responses``): members
    the handler left unset (optional ones it does not write) are omitted."""
    body = doc.model_dump_json(by_alias=True, exclude_unset=True)
    return Response(body, status, media_type="application/json")


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, read no further than ``max_bytes`` (413 past it, whatever Content-Length says);
    415 for a compressed one (RFC 9110: an unsupported content coding), which read as
    JSON would be a misleading 400."""
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding != "identity":
        raise Problem(415, f"send the body uncompressed (Content-Encoding {coding[:40]!r})")
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise Problem(413, f"body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> Any:
    """A JSON body: 413 too large, 415 not JSON, 400 malformed."""
    content_type = (
        request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    )
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(415, "send the body as application/json")
    body = await read_limited(request, max_bytes)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Problem(400, "body is not valid JSON") from None
    if too_deep(doc):
        raise Problem(400, f"body nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def validate(model: type[M], raw: Any) -> M:
    """``raw`` as ``model``; 422 naming every field that does not validate."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def read_body(request: Request, model: type[M], max_bytes: int) -> M:
    """Parse and validate a JSON body: 413 too large, 415 not JSON, 400 malformed, 422 invalid."""
    return validate(model, await read_json(request, max_bytes))
