"""Packaging: declared dependencies, the licence, pinned constraints, the CLI's manners."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from typing import TYPE_CHECKING

import jwt
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mastery.dev.stack import DEV_JWT_SECRET
from tests.manifests import ROOT

if TYPE_CHECKING:
    from pathlib import Path

PACKAGE = ROOT / "shared" / "mastery"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: Modules that run only with an extra installed (they say so when it is missing).
_EXTRA_ONLY = {"mastery/dev/servers.py": "local", "mastery/dev/trigger.py": "local"}


def _imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _declared(extra: str | None = None) -> set[str]:
    reqs = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def test_every_package_imported_at_runtime_is_declared() -> None:
    providers = metadata.packages_distributions()
    missing: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        declared = _declared()
        if relative in _EXTRA_ONLY:
            declared |= _declared(_EXTRA_ONLY[relative])
        for module in _imports(path):
            if module in sys.stdlib_module_names or module in ("mastery", "__future__"):
                continue
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            assert dists, f"{relative}: nothing installed provides {module!r}"
            if not dists & declared:
                missing.setdefault(relative, set()).add(f"{module} ({', '.join(sorted(dists))})")
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_the_licence_file_is_the_apache_2_licence_pyproject_names() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it


def _runtime_closure() -> set[str]:
    """The engine's runtime requirements and theirs, as installed here (no extras)."""
    todo = [Requirement(r) for r in PROJECT["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        for extra in req.extras:
            todo += [
                Requirement(r)
                for r in metadata.requires(req.name) or []
                if Requirement(r).marker and Requirement(r).marker.evaluate({"extra": extra})  # type: ignore[union-attr]
            ]
        for raw in metadata.requires(req.name) or []:
            dep = Requirement(raw)
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append(dep)
    return seen


def test_constraints_pin_every_runtime_package_at_the_tested_version() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    assert "mastery-engine" not in pins
    unpinned = _runtime_closure() - set(pins)
    assert not unpinned, f"run `make constraints`: {sorted(unpinned)} not pinned"
    stale = {
        n: (pins[n], metadata.version(n))
        for n in _runtime_closure()
        if pins[n] != metadata.version(n)
    }
    assert not stale, f"run `make constraints`: pinned != tested {stale}"


def _mastery(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MASTERY_JWT")}
    return subprocess.run(
        [sys.executable, "-m", "mastery.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=60,
    )


def test_mastery_version_is_the_package_version() -> None:
    done = _mastery("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"mastery, version {metadata.version('mastery-engine')}"


_CLAIMS = ("token", "--sub", "s1", "--role", "student", "--tenant", "school-a")


def test_mastery_token_refuses_the_dev_secret_unless_asked() -> None:
    refused = _mastery(*_CLAIMS)
    assert refused.returncode != 0
    assert "--dev" in refused.stderr
    assert refused.stdout == ""
    asked = _mastery(*_CLAIMS, "--dev")
    assert asked.returncode == 0, asked.stderr
    claims = jwt.decode(asked.stdout.strip(), DEV_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "s1"


@pytest.mark.parametrize("how", ["variable", "file"])
def test_mastery_token_signs_with_the_configured_secret_like_the_functions(
    how: str, tmp_path: Path
) -> None:
    secret = "s3cret-" + "x" * 40
    if how == "file":
        (tmp_path / "jwt").write_text(secret + "\n")
        env = {"MASTERY_JWT_SECRET_FILE": str(tmp_path / "jwt")}
    else:
        env = {"MASTERY_JWT_SECRET": secret}
    done = _mastery(*_CLAIMS, "--dev", **env)  # --dev changes nothing once one is set
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert jwt.decode(token, secret, algorithms=["HS256"])["tenant"] == "school-a"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"])
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token)
