"""Metrics, alerting rules and the dashboard: names, conventions, promtool, cross-checks.

promtool comes from Debian's ``prometheus`` package (the Makefile installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import mastery.metrics
from mastery.errors import Misconfigured, Unavailable
from mastery.metrics import dlq_reason, retry_reason
from mastery.store import Outcome

OBSERVABILITY = Path(__file__).resolve().parents[2] / "infra" / "observability"
RULES = OBSERVABILITY / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"

#: PromQL words that are neither metrics nor functions.
_KEYWORDS = frozenset(
    {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip


def _exported() -> set[str]:
    """Every series name this process's registry exports, labelled children or not."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}{s}" for s in ("_bucket", "_count", "_sum", "_created")}
        elif family.type in ("summary",):
            names |= {f"{family.name}{s}" for s in ("", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
        names |= {s.name for s in family.samples}
    return names


def _metrics_of(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        follows = text[match.end() :].lstrip()[:1]
        if word.lower() in _KEYWORDS or follows == "(":
            continue
        names.add(word)
    return names


def _rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in _panels(doc["panels"]):
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for var in doc["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            exprs.append(re.sub(r"^label_values\(([^,]+),.*\)$", r"\1", query["query"]))
    return exprs


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out += _panels(p.get("panels", []))
    return out


def test_the_expression_parser_finds_metrics_and_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, topic) (rate(a_seconds_bucket{x="y(z)"}[5m])))'
        " / on (topic) group_left b_total > bool 0 and c"
    )
    assert _metrics_of(expr) == {"a_seconds_bucket", "b_total", "c"}


@pytest.mark.parametrize(
    ("source", "exprs"), [("alerts.yml", _rule_exprs), ("grafana-dashboard.json", _dashboard_exprs)]
)
def test_every_metric_a_rule_or_the_dashboard_uses_is_one_the_engine_exports(
    source: str, exprs: Any
) -> None:
    found = [e for e in exprs()]
    assert found, f"{source} has no expressions"
    used = set().union(*(_metrics_of(e) for e in found))
    assert used, source
    assert used <= _exported(), f"{source} uses metrics the engine does not export"


def test_the_dashboard_covers_ingest_latency_errors_lag_dlq_batches_and_functions() -> None:
    doc = json.loads(DASHBOARD.read_text())
    rows = {p["title"] for p in doc["panels"] if p["type"] == "row"}
    assert rows == {"Ingest", "Lag and event age", "HTTP latency and errors", "Batches",
                    "Per function"}  # fmt: skip
    used = set().union(*(_metrics_of(e) for e in _dashboard_exprs()))
    engine = {n for n in _exported() if n.startswith("mastery_") and not n.endswith("_created")}
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in engine}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"


def test_the_alerts_cover_lag_event_age_dlq_5xx_latency_and_readiness() -> None:
    doc = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}
    for name in (
        "MasteryConsumerLagHigh",
        "MasteryConsumerStuck",
        "MasteryEventAgeHigh",
        "MasteryDeadLettersGrowing",
        "MasteryHttp5xxRateHigh",
        "MasteryQueryLatencyOverTarget",
        "MasteryNotReady",
    ):
        assert name in alerts
    for rule in alerts.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor in _runbook_anchors(), rule["alert"]


def _runbook_anchors() -> set[str]:
    text = (OBSERVABILITY.parents[1] / "docs" / "deploy.md").read_text()
    return {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make deps` installs Debian's prometheus package"
    return subprocess.run(
        [promtool, *args], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_rules() -> None:
    done = _promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    done = _promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_metric_names_follow_prometheus_conventions() -> None:
    engine = [f for f in REGISTRY.collect() if f.name.startswith("mastery_")]
    assert len(engine) >= 17
    for family in engine:
        assert re.fullmatch(r"mastery_[a-z0-9_]+", family.name), family.name
        if family.type == "histogram" and "duration" in family.name:
            assert family.name.endswith("_seconds"), family.name
        if family.type == "counter":
            assert f"{family.name}_total" in _exported()
        assert not re.search(r"_(ms|milliseconds|minutes|bytes_total)$", family.name)


def test_the_documented_metric_names() -> None:
    names = {f.name for f in REGISTRY.collect() if f.name.startswith("mastery_")}
    # Counters are listed by their family name (the exposition adds _total).
    assert names >= {
        "mastery_requests",
        "mastery_request_errors",
        "mastery_request_duration_seconds",
        "mastery_ready",
        "mastery_rate_limited",
        "mastery_events",
        "mastery_event_age_seconds",
        "mastery_consumer_lag_seconds",
        "mastery_consumer_lag_messages",
        "mastery_consumer_backlog_messages",
        "mastery_consumer_last_applied_timestamp_seconds",
        "mastery_consumer_retries",
        "mastery_dead_letters",
        "mastery_level_changes",
        "mastery_mcp_tool_calls",
        "mastery_batches_submitted",
        "mastery_batches",
        "mastery_batches_running",
        "mastery_batch_duration_seconds",
        "mastery_batch_students",
        "mastery_build_info",
    }


def test_event_outcomes_are_the_documented_ones() -> None:
    documented = {"applied", "duplicate", "erased", "ignored", "voiding", "voided", "dead_lettered"}
    as_counted = {"dead_lettered" if o is Outcome.REJECTED else o.value for o in Outcome}
    assert as_counted == documented
    assert all(o in mastery.metrics.EVENTS._documentation for o in documented)


def _fresh_samples(code: str) -> dict[str, float]:
    """``name{labels}`` -> value of every ``mastery_`` sample a new process exports after
    running ``code`` (nothing counted yet, unlike this test process)."""
    dump = (
        f"{code}\nfrom prometheus_client import REGISTRY\n"
        "for f in REGISTRY.collect():\n"
        "    for s in f.samples:\n"
        "        if s.name.startswith('mastery_') and not s.name.endswith('_created'):\n"
        "            print(s.name + repr(sorted(s.labels.items())), s.value)"
    )
    out = subprocess.run(
        [sys.executable, "-c", dump], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in out.splitlines()}


def _series(name: str, **labels: str) -> str:
    return name + repr(sorted(labels.items()))


def test_every_label_value_known_at_import_is_exported_at_zero_from_the_start() -> None:
    """``increase()`` needs a sample before the first increment: a series born at 5 hides
    those 5 from every alert, and with scale to zero most pods are new."""
    from mastery.batch.runner import RunOutcome
    from mastery.domain.batch import Priority
    from mastery.policy import Role

    samples = _fresh_samples("import mastery.metrics")
    documented_reasons = {"malformed", "missing_attribute", "unsupported_format",
                          "unknown_type", "wrong_topic", "too_old", "in_future", "day_full",
                          "conflict", "invalid_field"}  # fmt: skip
    assert set(mastery.metrics.DLQ_REASONS) == documented_reasons
    assert set(mastery.metrics.BATCH_STATUSES) == {o.value for o in RunOutcome} | {"error"}
    expected = [
        *(_series("mastery_dead_letters_total", reason=r) for r in documented_reasons),
        *(
            _series("mastery_events_total", outcome=mastery.metrics.event_outcome(o))
            for o in Outcome
        ),
        *(_series("mastery_batches_total", status=s) for s in mastery.metrics.BATCH_STATUSES),
        *(_series("mastery_level_changes_total", direction=d) for d in ("up", "down")),
        *(_series("mastery_rate_limited_total", role=r.value) for r in Role),
        *(_series("mastery_batches_submitted_total", priority=p.value) for p in Priority),
    ]
    assert {name: samples.get(name) for name in expected} == dict.fromkeys(expected, 0.0)


def test_each_mcp_tools_answers_and_failures_are_exported_at_zero_from_the_start() -> None:
    from mastery.mcp import TOOLS

    samples = _fresh_samples("import mastery.mcp.server")
    expected = [
        _series("mastery_mcp_tool_calls_total", tool=tool, status=status)
        for tool in TOOLS
        for status in ("200", "500", "503")
    ]
    assert len(expected) >= 18
    assert {name: samples.get(name) for name in expected} == dict.fromkeys(expected, 0.0)


def test_build_info_names_the_version() -> None:
    value = REGISTRY.get_sample_value(
        "mastery_build_info",
        {"version": mastery.metrics._version(), "python": __import__("platform").python_version()},
    )
    assert value == 1.0


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("missing CloudEvent attribute ce_id", "missing_attribute"),
        ("malformed JSON: unexpected character", "malformed"),
        ("malformed Avro: EOFError", "malformed"),
        ("empty record value", "malformed"),
        ("unknown event type 'x.v1'", "unknown_type"),
        ("event type 'mastery.quiz.v1' does not belong on topic mastery.completion", "wrong_topic"),
        ("unsupported content-type 'text/plain'", "unsupported_format"),
        ("occurred_at 2020-01-01T00:00:00+00:00 is older than the 90-day window", "too_old"),
        ("occurred_at 2099-01-01T00:00:00+00:00 is in the future", "in_future"),
        ("score: Input should be less than or equal to 1", "invalid_field"),
        ("malformed batch message: not JSON", "malformed"),
        (
            "the student already has 65535 quiz events on this day: a day record holds no more",
            "day_full",
        ),
        (
            "statement 1f0c2b9e-7d4a-4f3e-9a51-3c8e2d6b7a10 differs from the one held under"
            " its id: the first is kept",
            "conflict",
        ),
    ],
)
def test_dead_letter_reasons_fall_into_a_few_classes(reason: str, label: str) -> None:
    assert dlq_reason(reason) == label


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (Unavailable("redis: ConnectionError: Error 111 connecting to 127.0.0.1:6379."), "redis"),
        (Unavailable("kafka: delivery not confirmed"), "kafka"),
        (Misconfigured("redis: NOPERM this user has no permissions"), "redis"),
        (Unavailable("the request applying this record's group was cancelled"), "other"),
        (Unavailable("mongodb: down"), "other"),
    ],
)
def test_consumer_retries_are_counted_by_the_dependency_down(error: Exception, label: str) -> None:
    assert retry_reason(error) == label


def test_consumer_retry_reasons_are_exported_at_zero_before_any_retry() -> None:
    for reason in ("redis", "kafka", "other"):
        assert (
            REGISTRY.get_sample_value("mastery_consumer_retries_total", {"reason": reason})
            is not None
        )


def test_metrics_can_be_served_on_a_port_of_their_own() -> None:
    import socket
    import urllib.request

    from mastery.bootstrap import serve_metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve_metrics(port, "unit")
    serve_metrics(port, "unit")  # once per process: a second call changes nothing
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        body = answer.read().decode()
    assert "mastery_build_info{" in body
    assert "# TYPE mastery_events_total counter" in body
