"""``mastery token · batch · mcp --stdio``: acting as one caller (a bearer token)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import uvloop

__all__ = ["batch", "mcp", "token"]


@click.command()
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
    from mastery.settings import load

    secret = load().jwt_secret_value()
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


@click.command()
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


@click.command()
@click.option("--stdio", is_flag=True, required=True, help="Serve MCP on stdin/stdout.")
def mcp(stdio: bool) -> None:
    """The engine's MCP tools for a local agent host, as the caller in MASTERY_MCP_TOKEN.

    Redis, the broker and the JWT secret come from the usual variables (REDIS_URL,
    KAFKA_BOOTSTRAP_SERVERS, MASTERY_JWT_SECRET); the HTTP transport is the /mcp function.
    """
    from mastery.bootstrap import build
    from mastery.errors import Unavailable
    from mastery.mcp import TOKEN_ENV, serve_stdio
    from mastery.settings import load
    from mastery.web.problems import Problem

    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise click.ClickException(f"set {TOKEN_ENV} to the bearer token to act with")

    async def run() -> None:
        res = build(load(), source="mcp")
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
