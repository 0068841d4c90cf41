"""Settings that do not validate: one line naming each variable, at start-up, never a 500."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mastery.dev.servers import function_argv
from mastery.errors import Misconfigured
from mastery.settings import load

_ROOT = Path(__file__).resolve().parents[2]


def test_every_bad_variable_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTERY_HALF_LIFE_DAYS", "-1")
    monkeypatch.setenv("MASTERY_BATCH_SIZE", "many")
    with pytest.raises(Misconfigured) as caught:
        load()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("configuration: ")
    assert "MASTERY_HALF_LIFE_DAYS: Input should be greater than 0" in message
    assert "MASTERY_BATCH_SIZE: Input should be a valid integer" in message


def test_a_rejected_value_is_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The value may be a secret (a librdkafka password among the pass-through properties)."""
    monkeypatch.setenv("MASTERY_KAFKA_PROPERTIES", '{"sasl.password": ["hunter2"]}')
    with pytest.raises(Misconfigured, match=r"take scalar values: sasl\.password") as caught:
        load()
    assert "hunter2" not in str(caught.value)
    assert "Value error" not in str(caught.value)


def test_a_json_variable_that_is_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTERY_XAPI_TENANTS", "school-a")
    with pytest.raises(
        Misconfigured, match=r"^configuration: MASTERY_XAPI_TENANTS: not valid JSON \(Expecting"
    ):
        load()


def test_mcp_origins_are_kept_as_a_browser_sends_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower case, without the scheme's default port: ``Origin`` is compared as it comes."""
    monkeypatch.setenv(
        "MASTERY_MCP_ALLOWED_ORIGINS",
        '["https://Tutor.Example:443", "http://localhost:5173", "http://[::1]:80"]',
    )
    assert load().mcp_allowed_origins == (
        "https://tutor.example",
        "http://localhost:5173",
        "http://[::1]",
    )
    monkeypatch.delenv("MASTERY_MCP_ALLOWED_ORIGINS")
    assert load().mcp_allowed_origins == ()  # no web page may call /mcp


@pytest.mark.parametrize(
    "entry", ["*", "null", "tutor.example", "https://tutor.example/", "https://tutor.example:0x1"]
)
def test_an_mcp_origin_that_is_not_one_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    """A wildcard or ``null`` would let any page through; a path never matches an Origin."""
    monkeypatch.setenv("MASTERY_MCP_ALLOWED_ORIGINS", json.dumps(["https://ok.example", entry]))
    with pytest.raises(Misconfigured) as caught:
        load()
    assert str(caught.value) == (
        f"configuration: MASTERY_MCP_ALLOWED_ORIGINS: {entry!r} is not an origin: "
        "scheme://host[:port], nothing after"
    )


def test_mcp_origins_are_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTERY_MCP_ALLOWED_ORIGINS", "https://tutor.example")
    with pytest.raises(
        Misconfigured, match=r"^configuration: MASTERY_MCP_ALLOWED_ORIGINS: not valid JSON \("
    ):
        load()


@pytest.mark.parametrize(
    ("replicas", "wait_ms", "valid"), [(1, 5000, False), (1, 4999, True), (0, 9000, True)]
)
def test_the_erasure_wait_must_end_within_the_redis_deadline(
    monkeypatch: pytest.MonkeyPatch, replicas: int, wait_ms: int, valid: bool
) -> None:
    """A WAIT longer than the Redis call's deadline would time out as "unavailable"
    instead of answering how many replicas hold the erasure; with no replicas to wait
    for, the wait is never sent."""
    monkeypatch.setenv("MASTERY_REDIS_TIMEOUT_MS", "5000")
    monkeypatch.setenv("MASTERY_ERASURE_REPLICAS", str(replicas))
    monkeypatch.setenv("MASTERY_ERASURE_WAIT_MS", str(wait_ms))
    if valid:
        assert load().erasure_wait_ms == wait_ms
        return
    with pytest.raises(Misconfigured, match="MASTERY_ERASURE_WAIT_MS must be below"):
        load()


def test_erasure_looks_for_seen_buckets_over_the_longest_window_allowed() -> None:
    """Buckets written under a longer window outlive it (keys.SEEN_HORIZON_DAYS)."""
    from annotated_types import Le

    from mastery.settings import Settings
    from mastery.store import keys

    bounds = Settings.model_fields["retention_days"].metadata
    assert [b.le for b in bounds if isinstance(b, Le)] == [keys.SEEN_HORIZON_DAYS]


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=os.environ | env, capture_output=True, text=True, timeout=60, cwd=_ROOT
    )


@pytest.mark.parametrize(
    ("function", "variable", "value", "reason"),
    [
        (
            "recommendations",
            "LOG_LEVEL",
            "verbose",
            "Input should be 'CRITICAL', 'FATAL', 'ERROR', 'WARN', 'WARNING', 'INFO' or 'DEBUG'",
        ),
        ("prediction", "MASTERY_HALF_LIFE_DAYS", "0", "Input should be greater than 0"),
        (
            "mcp",
            "MASTERY_MCP_ALLOWED_ORIGINS",
            '["*"]',
            "'*' is not an origin: scheme://host[:port], nothing after",
        ),
    ],
)
def test_a_function_stops_at_its_start_with_one_log_line(
    function: str, variable: str, value: str, reason: str
) -> None:
    """Not a process that answers 500 to every request: functions-framework loads the
    function's module as it starts, and the app's provider checks the settings there."""
    done = _run(function_argv(_ROOT / "functions" / function / "main.py", 0), **{variable: value})
    assert done.returncode == 2
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0]["level"] == "CRITICAL"
    assert lines[0]["service"] == function
    assert lines[0]["message"] == f"cannot start: configuration: {variable}: {reason}"


@pytest.mark.parametrize("how", ["unset", "empty file", "missing file"])
def test_a_function_that_verifies_callers_stops_without_a_jwt_secret(
    how: str, tmp_path: Path
) -> None:
    """Not a /ready that never passes and a 503 on every request: one line at start."""
    env = {"MASTERY_JWT_SECRET": "", "MASTERY_JWT_SECRET_FILE": ""}
    if how != "unset":
        secret = tmp_path / "jwt"
        if how == "empty file":
            secret.write_text("\n")
        env["MASTERY_JWT_SECRET_FILE"] = str(secret)
    done = _run(function_argv(_ROOT / "functions" / "prediction" / "main.py", 0), **env)
    assert done.returncode == 2
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0]["level"] == "CRITICAL"
    assert lines[0]["message"].startswith(
        "cannot start: configuration: MASTERY_JWT_SECRET (or MASTERY_JWT_SECRET_FILE"
    )


def test_an_event_handler_needs_no_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """It verifies no caller: deliveries are trusted like the topic (docs/security.md)."""
    from mastery.bootstrap import resources

    provider = type(resources)()  # not the process's own: it keeps what it read
    monkeypatch.delenv("MASTERY_JWT_SECRET", raising=False)
    monkeypatch.delenv("MASTERY_JWT_SECRET_FILE", raising=False)
    provider.check("on-quiz", authenticates=False)
    with pytest.raises(SystemExit):
        provider.check("query", authenticates=True)


def test_a_command_stops_with_one_line_and_status_2() -> None:
    done = _run(
        [sys.executable, "-m", "mastery.cli", "consume", "mastery.quiz"],
        MASTERY_TOPIC_PARTITIONS="none",
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "mastery consume: cannot start: configuration: "
        "MASTERY_TOPIC_PARTITIONS: Input should be a valid integer, "
        "unable to parse string as an integer"
    )
