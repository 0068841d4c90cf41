"""OpenTelemetry tracing: W3C trace context in, spans around the calls that matter, out again.

Off unless an ``OTEL_*`` variable asks for an exporter (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER=otlp``; never with
``OTEL_SDK_DISABLED=true``). Off, every helper here is one flag test: no SDK, no
context objects, no headers written. On, the OTLP exporter (HTTP/protobuf) reads the
standard ``OTEL_EXPORTER_OTLP_*`` variables and the resource ``OTEL_SERVICE_NAME`` /
``OTEL_RESOURCE_ATTRIBUTES``.

Trace context travels as the CloudEvents ``traceparent`` extension: on Kafka records
the ``ce_traceparent`` header (binary binding; KafkaSource turns it into the HTTP
``ce-traceparent``), and the plain ``traceparent`` header that OpenTelemetry's Kafka
instrumentations read and write; both are read, both are written.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

__all__ = [
    "TRACE_HEADERS",
    "SpanKind",
    "answered",
    "configure",
    "context_of",
    "enabled",
    "extract_http",
    "failed",
    "inject_headers",
    "install",
    "name_route",
    "shutdown",
    "span",
    "trace_id",
    "wanted",
]

#: Kafka headers that carry trace context, read in this order.
TRACE_HEADERS = ("ce_traceparent", "traceparent")
_STATE_HEADERS = ("ce_tracestate", "tracestate")
#: HTTP headers that carry a caller's or an event's context, in order of preference: the
#: request's own, KafkaSource's binary mode, the OpenFaaS kafka-connector's record headers.
_HTTP_HEADERS = (
    ("traceparent", "tracestate"),
    ("ce-traceparent", "ce-tracestate"),
    ("x-kafka-ce_traceparent", "x-kafka-ce_tracestate"),
    ("x-kafka-traceparent", "x-kafka-tracestate"),
)
#: A batch span links at most this many producers' contexts.
_MAX_LINKS = 128
_PROPAGATOR = TraceContextTextMapPropagator()
_EXPORTER_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class _State:
    tracer: trace.Tracer | None = None
    provider: TracerProvider | None = None


def enabled() -> bool:
    return _State.tracer is not None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter == "otlp"
    return any(environ.get(name) for name in _EXPORTER_VARIABLES)


def configure(service: str) -> bool:
    """Install the SDK with the OTLP exporter if the environment asks for it (once)."""
    if _State.provider is not None or not wanted():
        return enabled()
    # Imported only when on: the SDK and exporter cost nothing to a process that never traces.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return True


def install(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` (tests: the SDK's in-memory exporter); ``None`` turns it off."""
    _State.provider = provider
    _State.tracer = provider.get_tracer("mastery") if provider is not None else None


def shutdown() -> None:
    """Export what is pending and stop (end of a worker process)."""
    if _State.provider is not None:
        _State.provider.shutdown()


def extract_http(headers: Mapping[str, str]) -> Context | None:
    """The caller's context: HTTP ``traceparent``, else the delivered event's.

    A KafkaSource delivers the record's ``ce_traceparent`` as ``ce-traceparent``, the
    kafka-connector as ``X-Kafka-ce_traceparent``: with no ``traceparent`` of the
    delivery's own, the request continues the event producer's trace. None when tracing
    is off or no such header is there.
    """
    if _State.tracer is None:
        return None
    for parent, state in _HTTP_HEADERS:
        value = headers.get(parent)
        if value:
            carrier = {"traceparent": value}
            if headers.get(state):
                carrier["tracestate"] = headers[state]
            return _PROPAGATOR.extract(carrier)
    return None


def context_of(headers: Mapping[str, bytes]) -> Context | None:
    """The producer's context of a Kafka record (``ce_traceparent``, else ``traceparent``)."""
    if _State.tracer is None:
        return None
    for name, state in zip(TRACE_HEADERS, _STATE_HEADERS, strict=True):
        raw = headers.get(name)
        if raw:
            carrier = {"traceparent": raw.decode(errors="replace")}
            if headers.get(state):
                carrier["tracestate"] = headers[state].decode(errors="replace")
            return _PROPAGATOR.extract(carrier)
    return None


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    links: Iterable[Context | None] = (),
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """A span made current for the block (``None`` when tracing is off).

    ``parent``: a remote context to continue (else the current span's); ``links``: the
    contexts of the records a batch span stands for.
    """
    tracer = _State.tracer
    if tracer is None:
        yield None
        return
    span_links = []
    for ctx in links:
        linked = trace.get_current_span(ctx).get_span_context() if ctx is not None else None
        if linked is not None and linked.is_valid:
            span_links.append(Link(linked))
            if len(span_links) >= _MAX_LINKS:
                break
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, links=span_links, attributes=attributes
    ) as current:
        yield current


def inject_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``headers`` with the current context as ``ce_traceparent`` and ``traceparent``.

    Any trace headers already there (a dead letter copies its record's) are replaced: the
    record's producer is the parent or a link of the current span.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, otel_context.get_current())
    if "traceparent" not in carrier:
        return list(headers)
    replaced = {*TRACE_HEADERS, *_STATE_HEADERS}
    out = [(k, v) for k, v in headers if k not in replaced]
    parent = carrier["traceparent"].encode()
    out += [("ce_traceparent", parent), ("traceparent", parent)]
    if carrier.get("tracestate"):
        state = carrier["tracestate"].encode()
        out += [("ce_tracestate", state), ("tracestate", state)]
    return out


def answered(span: Span | None, status: int) -> None:
    """Record an HTTP answer on its server span: a 5xx marks it as an error (OpenTelemetry's
    HTTP conventions; a 4xx is the caller's error, not the server's)."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)


def failed(exc: BaseException) -> None:
    """Record an exception that became an error answer on the current span."""
    if _State.tracer is not None:
        trace.get_current_span().record_exception(exc)


def name_route(route: str) -> None:
    """Name the current (server) span after the route's template: bounded span names."""
    current = trace.get_current_span()
    current.update_name(route)
    current.set_attribute("http.route", route)


def trace_id() -> str | None:
    """The current trace id (32 hex digits) for logs; None when off or outside a span."""
    if _State.tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
