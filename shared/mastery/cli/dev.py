"""``mastery dev · gateway · produce``: the local stack, its gateway, one event by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import click

from mastery.domain import Component

__all__ = ["dev", "gateway", "produce"]


@click.command()
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


@click.command()
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


@click.command()
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
    from mastery.settings import load
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
    producer = Producer(producer_config(load()))
    producer.produce(event_topic(comp), value, student.encode(), headers=dict(headers))
    if producer.flush(10):
        raise click.ClickException("the broker did not acknowledge the event")
    click.echo(ce_id)


def _parse_pairs(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)
