"""The dev tooling (``mastery.dev``) stays out of what is deployed.

Functions and the runtime modules never import it: it starts servers, wants the ``local``
extra and has no place in a function's image. Only the CLI (``mastery dev``,
``mastery trigger``, ``mastery gateway``), the tests and the benchmarks use it.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

import pytest

from tests.manifests import ROOT

if TYPE_CHECKING:
    from pathlib import Path

PACKAGE = ROOT / "shared" / "mastery"
#: Where the dev tooling may be imported from.
_USERS = (PACKAGE / "dev", PACKAGE / "cli")


def _modules(source: str) -> set[str]:
    """Every module ``source`` imports, by its full name (``from a import b``: a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def _imports_dev(source: str) -> bool:
    return any(m == "mastery.dev" or m.startswith("mastery.dev.") for m in _modules(source))


@pytest.mark.parametrize(
    ("source", "imports"),
    [
        ("from mastery.dev.servers import free_port", True),
        ("from mastery.dev import servers", True),
        ("from mastery import dev", True),
        ("def f():\n    import mastery.dev.stack", True),
        ("from mastery.devices import x", False),
        ("from mastery import topics", False),
    ],
)
def test_an_import_of_the_dev_tooling_is_seen(source: str, imports: bool) -> None:
    assert _imports_dev(source) is imports


def _deployed() -> list[Path]:
    runtime = [p for p in PACKAGE.rglob("*.py") if not any(p.is_relative_to(u) for u in _USERS)]
    return sorted([*runtime, *(ROOT / "functions").rglob("*.py")])


def test_no_function_or_runtime_module_imports_the_dev_tooling() -> None:
    deployed = _deployed()
    assert PACKAGE / "web" / "app.py" in deployed
    assert ROOT / "functions" / "on_quiz" / "main.py" in deployed
    offenders = [
        p.relative_to(ROOT).as_posix()
        for p in deployed
        if _imports_dev(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"import mastery.dev: {offenders}"


def test_cluster_ports_are_distinct_and_clear_of_each_others_bus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each port is only free when chosen: one chosen twice, or another's bus port
    (+10000), left a test cluster short of a node (it never became ok)."""
    from mastery.dev import servers

    offered = iter([20_000, 20_000, 30_000, 10_000, 20_001, 25_000])
    monkeypatch.setattr(servers, "free_cluster_port", lambda: next(offered))
    assert servers.free_cluster_ports(3) == [20_000, 20_001, 25_000]
