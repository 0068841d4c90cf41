"""What docs/deploy.md tells an operator to run or edit, against what it acts on: the
programs the image has, the names the overlays render, the files that spell a name.
A runbook command that calls a program the image lacks, or looks in another
namespace, fails when it is needed most."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.manifests import OVERLAYS, ROOT, Manifest, rendered

if TYPE_CHECKING:
    from pathlib import Path

_DEPLOY = ROOT / "docs" / "deploy.md"
_DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
_PROD = OVERLAYS / "prod"
#: What a command may call inside a function's container: the image is python:*-slim
#: and the engine's virtualenv (infra/Dockerfile); slim has no wget and no curl.
_IN_THE_IMAGE = {"python", "python3", "mastery", "sh"}
_EXEC = re.compile(r"kubectl\b[^`\n|]*?\bexec\b([^`\n|]*?)\s--\s+(\S+)")


def _joined(text: str) -> str:
    """``text`` with shell line continuations joined."""
    return text.replace("\\\n", " ")


def _of(overlay: Path, kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in rendered(overlay) if d["kind"] == kind}


def test_commands_run_in_a_function_container_are_programs_the_image_has() -> None:
    found = [
        (doc.name, flags, program)
        for doc in _DOCS
        for flags, program in _EXEC.findall(_joined(doc.read_text(encoding="utf-8")))
    ]
    assert found, "the runbook reads /ready inside a pod: the pattern finds no command"
    containers = {
        c["name"]
        for s in _of(_PROD, "Service").values()
        for c in s["spec"]["template"]["spec"]["containers"]
    }
    for doc, flags, program in found:
        assert program in _IN_THE_IMAGE, f"{doc}: `{program}` is not in the image"
        named = re.search(r"(?:-c|--container)[ =](\S+)", flags)
        assert named is None or named[1] in containers, f"{doc}: no container {named[1]!r}"
