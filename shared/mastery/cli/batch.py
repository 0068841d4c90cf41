"""``mastery batch``: submit a batch over HTTP and follow it to the end with a progress bar."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click
import httpx

if TYPE_CHECKING:
    from pathlib import Path

    from click._termui_impl import ProgressBar

__all__ = ["follow", "read_ids", "submit", "summary_lines"]

_FINAL = ("done", "failed")


def read_ids(path: Path) -> list[str]:
    """One id a line; blank lines and ``#`` comments skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _fail(resp: httpx.Response) -> click.ClickException:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    return click.ClickException(f"{resp.status_code}: {detail}")


def submit(http: httpx.Client, ids: list[str], priority: str) -> dict[str, Any]:
    """Always asynchronous: the status route is what the progress bar follows."""
    resp = http.post(
        "/batch/mastery", json={"student_ids": ids, "priority": priority, "async": True}
    )
    if resp.status_code != 202:
        raise _fail(resp)
    doc: dict[str, Any] = resp.json()
    return doc


def follow(
    http: httpx.Client, url: str, total: int, every_s: float, give_up_s: float
) -> dict[str, Any]:
    """Poll the status route until the batch is final, drawing progress on stderr."""
    deadline = time.monotonic() + give_up_s
    shown = 0
    bar: ProgressBar[int] = click.progressbar(length=total, label="students", file=sys.stderr)
    with bar:
        while True:
            resp = http.get(url)
            if resp.status_code != 200:
                raise _fail(resp)
            doc: dict[str, Any] = resp.json()
            bar.update(int(doc["processed"]) - shown)
            shown = int(doc["processed"])
            if doc["status"] in _FINAL:
                return doc
            if time.monotonic() > deadline:
                raise click.ClickException(f"batch still {doc['status']} after {give_up_s:.0f} s")
            time.sleep(every_s)


def summary_lines(doc: dict[str, Any]) -> list[str]:
    s = doc.get("summary") or {}
    lines = [
        f"batch {doc['batch_id']}: {doc['status']}"
        + (f" ({doc['reason']})" if doc.get("reason") else ""),
        f"succeeded {doc['succeeded']}, failed {doc['failed']} of {doc['total']}",
    ]
    if s.get("count"):
        lines.append(
            f"mastery mean {s['mean']}, median {s['median']}, min {s['min']}, max {s['max']}"
        )
        lines.append("levels " + ", ".join(f"{k} {v}" for k, v in s["levels"].items()))
    errors: dict[str, int] = {}
    for r in doc.get("results", []):
        if "error" in r:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    if errors:
        lines.append("errors " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    return lines
