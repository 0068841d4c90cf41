"""The least-privilege Redis user of docs/redis-acl.md against what the engine's scripts run."""

from __future__ import annotations

import re
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


def _granted() -> set[str]:
    text = (_ROOT / "docs" / "redis-acl.md").read_text()
    match = re.search(r"^ACL SETUSER .+$", text, re.MULTILINE)
    assert match, "docs/redis-acl.md has no ACL SETUSER line"
    return {token[1:].upper() for token in match[0].split() if token.startswith("+")}


def test_every_command_a_script_names_is_granted() -> None:
    """ACLs check what a script calls too: a command on a path no secured test reaches
    (a full day record's SREM) would fail only in production, as NOPERM."""
    called = set()
    store = _ROOT / "shared" / "mastery" / "store"
    for script in sorted([*store.glob("*.lua"), *store.glob("*.py")]):  # inline scripts too
        called |= set(re.findall(r"(?:redis\.p?call|in_chunks)\('([A-Za-z]+)'", script.read_text()))
    assert called, "no redis.call found: the pattern no longer matches the scripts"
    assert sorted({c.upper() for c in called} - _granted()) == []
