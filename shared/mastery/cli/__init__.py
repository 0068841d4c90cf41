"""The ``mastery`` command: dev, consume, trigger, batch-worker, batch, gateway, produce,
replay, rebuild, token, openapi, asyncapi, mcp, retention."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import uvloop

from mastery.domain import Component

__all__ = ["main"]


#: Every consuming command tells its supervisor (mastery dev, tests) when it is assigned.
_ready_file = click.option(
    "--ready-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Touched once partitions are assigned.",
)


@click.group()
@click.version_option(package_name="mastery-engine", prog_name="mastery")
def main() -> None:
    """Mastery Engine: learning events to an explainable mastery score."""


@main.command()
@click.option(
    "--port",
    envvar="MASTERY_PORT",
    default=8080,
    show_default=True,
    help="Gateway port; functions take the next ports up.",
)
@click.option(
    "--redis-port",
    envvar="MASTERY_REDIS_PORT",
    default=6379,
    show_default=True,
    help="Port of the embedded redis-server (when REDIS_URL is unset).",
)
@click.option(
    "--kafka-port",
    envvar="MASTERY_KAFKA_PORT",
    default=9092,
    show_default=True,
    help="Port of the embedded Tansu broker (when KAFKA_BOOTSTRAP_SERVERS is unset).",
)
@click.option(
    "--functions-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("functions"),
    show_default=True,
)
@click.option(
    "--data-dir",
    envvar="MASTERY_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where the embedded redis-server keeps its append-only file (kept across restarts).",
)
def dev(port: int, redis_port: int, kafka_port: int, functions_dir: Path, data_dir: Path) -> None:
    """Run the whole stack locally until Ctrl-C."""
    from mastery.dev.stack import Stack, describe

    if not functions_dir.is_dir():
        raise click.ClickException(f"{functions_dir} not found: run from the project root")
    stack = Stack(functions_dir.resolve(), port, redis_port, kafka_port, data_dir)
    try:
        stack.start()
        click.echo(describe(stack))
        code = stack.wait()
    finally:
        stack.stop()
    raise SystemExit(code)


@main.command()
@click.argument("topics", nargs=-1, required=True)
@click.option(
    "--group",
    envvar="MASTERY_CONSUMER_GROUP",
    default=None,
    help="Consumer group (default mastery-consume).",
)
@_ready_file
@click.option(
    "--metrics-port",
    envvar="MASTERY_METRICS_PORT",
    default=0,
    type=int,
    help="Serve Prometheus /metrics on this port (0: off).",
)
def consume(
    topics: tuple[str, ...], group: str | None, ready_file: Path | None, metrics_port: int
) -> None:
    """Apply events from TOPICS in batches, committing offsets after Redis applied them."""
    from mastery.bootstrap import serve_metrics
    from mastery.events.consumer import consume as run

    serve_metrics(metrics_port, "mastery-consume")
    _serve(lambda res, stop: run(res, topics, stop, group, ready_file), "mastery-consume")


@main.command()
@click.option("--topic", required=True)
@click.option("--sink", required=True, help="URL of the event-handler function.")
@_ready_file
def trigger(topic: str, sink: str, ready_file: Path | None) -> None:
    """Deliver TOPIC's records to SINK as CloudEvents (a local KafkaSource)."""
    from mastery.dev.trigger import run_trigger

    _serve(lambda res, stop: run_trigger(res, topic, sink, stop, ready_file), f"trigger-{topic}")


@main.command("batch-worker")
@click.option(
    "--group",
    envvar="MASTERY_BATCH_GROUP",
    default=None,
    help="Consumer group (default mastery-batch-worker).",
)
@_ready_file
def batch_worker(group: str | None, ready_file: Path | None) -> None:
    """Run batches from mastery.batch.{high,normal,low}, always the highest priority first."""
    from mastery.batch.worker import PriorityWorker

    _serve(
        lambda res, stop: PriorityWorker(res, group=group, ready_file=ready_file).run(stop),
        "batch-worker",
    )


@main.command()
@click.option(
    "--file",
    "ids_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Student ids, one a line (# comments allowed).",
)
@click.option(
    "--priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True
)
@click.option(
    "--url",
    envvar="MASTERY_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The gateway.",
)
@click.option(
    "--token", envvar="MASTERY_TOKEN", required=True, help="Bearer token (admin or teacher)."
)
@click.option("--every", default=0.5, show_default=True, help="Seconds between status polls.")
@click.option("--give-up", default=900.0, show_default=True, help="Seconds to follow at most.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the final status document (with every result) here as JSON.",
)
def batch(
    ids_file: Path,
    priority: str,
    url: str,
    token: str,
    every: float,
    give_up: float,
    output: Path | None,
) -> None:
    """Submit a batch of students and follow it to the end; print its summary."""
    import httpx
    import orjson

    from mastery.cli.batch import follow, read_ids, submit, summary_lines

    ids = read_ids(ids_file)
    if not ids:
        raise click.ClickException(f"{ids_file} holds no ids")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        queued = submit(http, ids, priority)
        click.echo(f"batch {queued['batch_id']} queued ({len(ids)} students, {priority})", err=True)
        doc = follow(http, queued["status_url"], len(ids), every, give_up)
    if output is not None:
        output.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    for line in summary_lines(doc):
        click.echo(line)
    if doc["status"] != "done":
        raise SystemExit(1)


@main.command()
@click.option("--port", type=int, required=True)
@click.option("--routes", required=True, help="METHOD /path=url,...")
@click.option("--functions", required=True, help="name=url,...")
@click.option("--ready-files", default="", help="name=path,... of triggers' ready files.")
def gateway(port: int, routes: str, functions: str, ready_files: str) -> None:
    """Serve the local gateway (started by `mastery dev`)."""
    import uvicorn

    from mastery.dev.gateway import create_app

    files = {name: Path(path) for name, path in _parse_pairs(ready_files).items()}
    app = create_app(_parse_pairs(routes), _parse_pairs(functions), files)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@main.command()
@click.argument("component", type=click.Choice([c.value for c in Component]))
@click.option("--student", required=True)
@click.option("--tenant", required=True)
@click.option("--score", type=float, required=True)
@click.option("--class-id", default=None)
@click.option("--area", default=None)
@click.option("--event-id", default=None, help="Default: a new UUID.")
@click.option("--format", "fmt", type=click.Choice(["avro", "json"]), default="avro")
def produce(
    component: str,
    student: str,
    tenant: str,
    score: float,
    class_id: str | None,
    area: str | None,
    event_id: str | None,
    fmt: str,
) -> None:
    """Produce one learning event to mastery.COMPONENT (CloudEvents binary binding)."""
    from confluent_kafka import Producer

    from mastery.events.codec import AVRO, JSON, encode
    from mastery.events.kafka import producer_config
    from mastery.settings import Settings
    from mastery.topics import event_topic

    comp = Component(component)
    data = {
        "student_id": student,
        "tenant": tenant,
        "score": score,
        "occurred_at": datetime.now(UTC).isoformat(),
        "class_id": class_id,
        "area": area,
    }
    ce_id = event_id or str(uuid.uuid4())
    value, headers = encode(
        comp, data, event_id=ce_id, content_type=AVRO if fmt == "avro" else JSON
    )
    producer = Producer(producer_config(Settings()))
    producer.produce(event_topic(comp), value, student.encode(), headers=dict(headers))
    if producer.flush(10):
        raise click.ClickException("the broker did not acknowledge the event")
    click.echo(ce_id)


@main.command()
@click.option("--from-dlq", "dlq", required=True, help="Dead-letter topic, e.g. mastery.quiz.dlq.")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send nothing.")
@click.option(
    "--all", "everything", is_flag=True, help="Also send records that would be refused again."
)
def replay(dlq: str, dry_run: bool, everything: bool) -> None:
    """Re-publish dead-lettered events to their topic, after a fix.

    Only records the engine accepts now are sent, unless --all. Safe to repeat: a record
    sent twice is a duplicate by its event id.
    """
    from mastery.cli.replay import plan, read_dlq, send
    from mastery.settings import Settings

    settings = Settings()
    model, now = settings.scoring_model(), datetime.now(UTC)
    try:
        items = [plan(record, now, model) for record in read_dlq(settings, dlq)]
    except (ValueError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    chosen = [i for i in items if everything or i.verdict is None]
    for item in items:
        partition, offset = item.dlq_offset
        still = f"; would be refused again: {item.verdict}" if item.verdict else ""
        action = "send" if everything or item.verdict is None else "keep"
        click.echo(
            f"{action} {dlq}[{partition}]@{offset} -> {item.record.topic} ({item.reason}{still})"
        )
    if not dry_run:
        try:
            send(settings, chosen)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from None
    verb = "would be sent" if dry_run else "sent"
    click.echo(f"{len(chosen)} of {len(items)} records {verb}, {len(items) - len(chosen)} kept")


@main.command()
@click.option("--batch-size", default=500, show_default=True, help="Records per ingest call.")
@click.option(
    "--group",
    envvar="MASTERY_CONSUMER_GROUP",
    default="mastery-consume",
    show_default=True,
    help="The `mastery consume` group that goes on after the rebuilt offsets.",
)
def rebuild(batch_size: int, group: str) -> None:
    """Rebuild Redis from the event topics (after Redis was lost); safe to repeat."""
    from mastery.cli.rebuild import run

    run(batch_size, group, click.echo)


@main.command()
@click.option("--sub", required=True)
@click.option("--role", type=click.Choice(["student", "teacher", "admin"]), required=True)
@click.option("--tenant", required=True)
@click.option("--classes", default="", help="Comma-separated, for teachers.")
@click.option("--ttl", default=3600, show_default=True, help="Seconds until exp.")
@click.option("--act", default=None, help="A service acting for --sub (delegated token).")
@click.option(
    "--dev",
    "dev_secret",
    is_flag=True,
    help="Sign with the built-in dev secret (what `mastery dev` runs with) when none is set.",
)
def token(
    sub: str, role: str, tenant: str, classes: str, ttl: int, act: str | None, dev_secret: bool
) -> None:
    """Print an HS256 JWT signed with MASTERY_JWT_SECRET (or MASTERY_JWT_SECRET_FILE).

    With neither set it refuses, unless --dev asks for the built-in dev secret: a token
    signed with a secret everyone knows must never be made by accident.
    """
    import jwt

    from mastery.dev.stack import DEV_JWT_SECRET
    from mastery.settings import Settings

    secret = Settings().jwt_secret_value()
    if secret is None:
        if not dev_secret:
            raise click.ClickException(
                "no signing secret: set MASTERY_JWT_SECRET or MASTERY_JWT_SECRET_FILE, "
                "or pass --dev to sign with the built-in dev secret (local stack only)"
            )
        secret = DEV_JWT_SECRET
    claims: dict[str, object] = {
        "sub": sub,
        "role": role,
        "tenant": tenant,
        "exp": int(time.time()) + ttl,
    }
    if classes:
        claims["classes"] = classes.split(",")
    if act:
        claims["act"] = {"sub": act}
    click.echo(jwt.encode(claims, secret, algorithm="HS256"))


def _write_option(document: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--write",
        "target",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Write to this file instead of stdout ({document}).",
    )


def _emit(text: str, target: Path | None) -> None:
    if target is None:
        click.echo(text, nl=False)
    else:
        target.write_text(text)


@main.command()
@_write_option("docs/openapi.json")
def openapi(target: Path | None) -> None:
    """Print the merged OpenAPI 3.1 document the gateway serves."""
    from mastery.web.openapi import gateway_document, rendered

    _emit(rendered(gateway_document()), target)


@main.command()
@_write_option("docs/asyncapi.json")
def asyncapi(target: Path | None) -> None:
    """Print the AsyncAPI 3 document of the topics."""
    from mastery.events.asyncapi import asyncapi_document, rendered

    _emit(rendered(asyncapi_document()), target)


@main.command()
@click.option("--stdio", is_flag=True, required=True, help="Serve MCP on stdin/stdout.")
def mcp(stdio: bool) -> None:
    """The engine's MCP tools for a local agent host, as the caller in MASTERY_MCP_TOKEN.

    Redis, the broker and the JWT secret come from the usual variables (REDIS_URL,
    KAFKA_BOOTSTRAP_SERVERS, MASTERY_JWT_SECRET); the HTTP transport is the /mcp function.
    """
    from mastery.bootstrap import build
    from mastery.errors import Unavailable
    from mastery.mcp import TOKEN_ENV, serve_stdio
    from mastery.settings import Settings
    from mastery.web.problems import Problem

    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise click.ClickException(f"set {TOKEN_ENV} to the bearer token to act with")

    async def run() -> None:
        res = build(Settings(), source="mcp")
        try:
            await serve_stdio(res, token)
        finally:
            await res.aclose()

    try:
        uvloop.run(run())
    except Problem as problem:
        raise click.ClickException(f"{TOKEN_ENV}: {problem.detail}") from None
    except Unavailable as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def retention() -> None:
    """Retention (90 days): checks over the data held."""


@retention.command("check")
def retention_check() -> None:
    """List every key without a TTL; exit 1 when there is one."""
    from mastery.settings import Settings
    from mastery.store.client import redis_client
    from mastery.store.retention import keys_without_ttl

    async def run() -> list[str]:
        client = redis_client(Settings())
        try:
            return await keys_without_ttl(client)
        finally:
            await client.aclose()

    missing = uvloop.run(run())
    for key in missing:
        click.echo(key)
    if missing:
        raise click.ClickException(f"{len(missing)} key(s) without a TTL")
    click.echo("every key expires")


def _serve(run: object, source: str) -> None:
    """Run a long-lived async worker until SIGINT/SIGTERM, then let it finish its batch.

    A configuration that Redis or the broker refuses (wrong password, untrusted
    certificate), or a state the worker must not go on from, is one line on stderr and
    exit status 2, not a retry loop.
    """
    from mastery import tracing
    from mastery.bootstrap import build, preflight, serve_metrics
    from mastery.errors import Misconfigured, Unavailable
    from mastery.settings import Settings

    async def main_() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        settings = Settings()
        tracing.configure(source)
        serve_metrics(settings.metrics_port, source)
        res = build(settings, source=source)
        try:
            try:
                await preflight(res)
            except Misconfigured as exc:
                click.echo(f"{source}: cannot start: {exc}", err=True)
                return 2
            except Unavailable:
                pass  # not up yet: the worker retries as it runs
            try:
                await run(res, stop)  # type: ignore[operator]
            except Misconfigured as exc:
                click.echo(f"{source}: cannot go on: {exc}", err=True)
                return 2
        finally:
            await res.aclose()
        return 0

    try:
        code = uvloop.run(main_())
    finally:
        tracing.shutdown()  # the last spans are exported before the process ends
    if code:
        raise SystemExit(code)


def _parse_pairs(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)
