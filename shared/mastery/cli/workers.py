"""``mastery consume · trigger · batch-worker``: the long-lived Kafka consumers."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click
import uvloop

__all__ = ["batch_worker", "consume", "trigger"]


#: Every consuming command tells its supervisor (mastery dev, tests) when it is assigned.
_ready_file = click.option(
    "--ready-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Touched once partitions are assigned.",
)


@click.command()
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


@click.command()
@click.option("--topic", required=True)
@click.option("--sink", required=True, help="URL of the event-handler function.")
@_ready_file
def trigger(topic: str, sink: str, ready_file: Path | None) -> None:
    """Deliver TOPIC's records to SINK as CloudEvents (a local KafkaSource)."""
    try:
        from mastery.dev.trigger import run_trigger
    except ModuleNotFoundError as exc:  # aiohttp: the `local` extra, not in the image
        raise click.ClickException(f"mastery trigger needs the local extra: {exc}") from exc

    _serve(lambda res, stop: run_trigger(res, topic, sink, stop, ready_file), f"trigger-{topic}")


@click.command("batch-worker")
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


def _serve(run: object, source: str) -> None:
    """Run a long-lived async worker until SIGINT/SIGTERM, then let it finish its batch.

    A configuration that Redis or the broker refuses (wrong password, untrusted
    certificate), or a state the worker must not go on from, is one line on stderr and
    exit status 2, not a retry loop.
    """
    from mastery import tracing
    from mastery.bootstrap import build, preflight, serve_metrics
    from mastery.errors import Misconfigured, Unavailable
    from mastery.settings import load

    async def main_() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        settings = load()
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
