"""``mastery replay · rebuild · retention check``: the runbook's commands."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import uvloop

__all__ = ["rebuild", "replay", "retention"]


@click.command()
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
    from mastery.errors import Unavailable
    from mastery.settings import load

    settings = load()
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
        except Unavailable as exc:
            raise click.ClickException(f"not every record was sent ({exc}); run it again") from None
    verb = "would be sent" if dry_run else "sent"
    click.echo(f"{len(chosen)} of {len(items)} records {verb}, {len(items) - len(chosen)} kept")


@click.command()
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


@click.group()
def retention() -> None:
    """Retention (90 days): checks over the data held."""


@retention.command("check")
def retention_check() -> None:
    """List every key without a TTL; exit 1 when there is one."""
    from mastery.settings import load
    from mastery.store.client import redis_client
    from mastery.store.retention import keys_without_ttl

    async def run() -> list[str]:
        client = redis_client(load())
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
