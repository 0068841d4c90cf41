"""``mastery.tracing`` on its own: when it turns on, what it writes, what it costs off."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from mastery import tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask_for_an_exporter(
    environ: dict[str, str], wanted: bool
) -> None:
    assert tracing.wanted(environ) is wanted


def test_configure_installs_the_otlp_exporter_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not tracing.enabled()
    assert tracing.configure("unit") is False  # nothing set: stays off
    assert not tracing.enabled()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "on-quiz")
    try:
        assert tracing.configure("unit") is True
        provider = tracing._State.provider
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "on-quiz"
    finally:
        tracing.shutdown()
        tracing.install(None)


def test_off_nothing_is_read_written_or_made() -> None:
    assert tracing.extract_http({"traceparent": PARENT}) is None
    assert tracing.context_of({"ce_traceparent": PARENT.encode()}) is None
    assert tracing.trace_id() is None
    with tracing.span("x") as span:
        assert span is None


def test_off_a_span_costs_about_a_microsecond() -> None:
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        with tracing.span("x"):
            pass
    per_span = (time.perf_counter() - started) / n
    assert per_span < 20e-6, f"{per_span * 1e6:.1f} us per span with tracing off"


def test_on_published_headers_carry_the_current_span_and_replace_older_ones(
    spans: InMemorySpanExporter,
) -> None:
    old = [("ce_id", b"e1"), ("traceparent", PARENT.encode()), ("ce_traceparent", b"x")]
    parent = tracing.context_of(dict(old[1:2]))
    with tracing.span("publish", parent=parent) as span:
        assert span is not None
        headers = tracing.inject_headers(old)
        trace_id = tracing.trace_id()
    names = [k for k, _ in headers]
    assert names.count("traceparent") == names.count("ce_traceparent") == 1
    assert ("ce_id", b"e1") in headers
    written = dict(headers)["traceparent"].decode().split("-")
    assert written[1] == trace_id == PARENT.split("-")[1]
    [finished] = spans.get_finished_spans()
    assert written[2] == format(finished.context.span_id, "016x")


def test_on_http_prefers_traceparent_and_falls_back_to_the_delivered_events(
    spans: InMemorySpanExporter,
) -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    both = tracing.extract_http({"traceparent": PARENT, "ce-traceparent": other})
    event = tracing.extract_http({"ce-traceparent": other})
    connector = tracing.extract_http({"x-kafka-ce_traceparent": other})
    for ctx, expected in ((both, PARENT), (event, other), (connector, other)):
        with tracing.span("s", parent=ctx):
            assert tracing.trace_id() == expected.split("-")[1]
    assert tracing.extract_http({}) is None


def test_a_batch_span_links_its_records_producers(spans: InMemorySpanExporter) -> None:
    contexts = [
        tracing.context_of({"traceparent": f"00-{i:032x}-{i:016x}-01".encode()})
        for i in range(1, 4)
    ]
    with tracing.span("batch", links=[*contexts, None]):
        pass
    [span] = spans.get_finished_spans()
    assert [link.context.trace_id for link in span.links] == [1, 2, 3]
