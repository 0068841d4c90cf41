"""The ``mastery`` command: dev, consume, trigger, batch-worker, batch, gateway, produce,
replay, rebuild, token, openapi, asyncapi, mcp, retention."""

from __future__ import annotations

from typing import Any

import click

from mastery.cli import caller, dev, documents, operations, workers
from mastery.errors import Misconfigured

__all__ = ["main"]


class _Group(click.Group):
    """Settings that do not validate, or credentials refused, are one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Misconfigured as exc:
            click.echo(f"mastery {ctx.invoked_subcommand}: cannot start: {exc}", err=True)
            raise SystemExit(2) from None


@click.group(cls=_Group)
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
