"""The ``mastery`` command: dev, consume, trigger, batch-worker, batch, gateway, produce,
replay, rebuild, token, openapi, asyncapi, mcp, retention."""

from __future__ import annotations

import click

from mastery.cli import caller, dev, documents, operations, workers

__all__ = ["main"]


@click.group()
@click.version_option(package_name="mastery-engine", prog_name="mastery")
def main() -> None:
    """Mastery Engine: learning events to an explainable mastery score."""


for _command in (
    dev.dev,
    dev.gateway,
    dev.produce,
    workers.consume,
    workers.trigger,
    workers.batch_worker,
    caller.token,
    caller.batch,
    caller.mcp,
    operations.replay,
    operations.rebuild,
    operations.retention,
    documents.openapi,
    documents.asyncapi,
):
    main.add_command(_command)
