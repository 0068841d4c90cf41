"""``mastery openapi · asyncapi``: the generated API documents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["asyncapi", "openapi"]


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


@click.command()
@_write_option("docs/openapi.json")
def openapi(target: Path | None) -> None:
    """Print the merged OpenAPI 3.1 document the gateway serves."""
    from mastery.web.openapi import gateway_document, rendered

    _emit(rendered(gateway_document()), target)


@click.command()
@_write_option("docs/asyncapi.json")
def asyncapi(target: Path | None) -> None:
    """Print the AsyncAPI 3 document of the topics."""
    from mastery.events.asyncapi import asyncapi_document, rendered

    _emit(rendered(asyncapi_document()), target)
