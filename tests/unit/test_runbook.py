"""What docs/deploy.md tells an operator to run or edit, against what it acts on: the
programs the image has, the names the overlays render, the files that spell a name.
A runbook command that calls a program the image lacks, or looks in another
namespace, fails when it is needed most."""

from __future__ import annotations

import json
import re
import shlex
from typing import TYPE_CHECKING

from mastery.topics import BATCH_PREFIX
from tests.manifests import INFRA, OVERLAYS, ROOT, Manifest, rendered

if TYPE_CHECKING:
    from pathlib import Path

_DEPLOY = ROOT / "docs" / "deploy.md"
_DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
_DEV, _PROD = OVERLAYS / "dev", OVERLAYS / "prod"
#: What a command may call inside a function's container: the image is python:*-slim
#: and the engine's virtualenv (infra/Dockerfile); slim has no wget and no curl.
_IN_THE_IMAGE = {"python", "python3", "mastery", "sh"}
_EXEC = re.compile(r"kubectl\b[^`\n|]*?\bexec\b([^`\n|]*?)\s--\s+(\S+)")


def _joined(text: str) -> str:
    """``text`` with shell line continuations joined."""
    return text.replace("\\\n", " ")


def _block(heading: str) -> str:
    """The first ``sh`` code block after ``heading`` in docs/deploy.md."""
    text = _DEPLOY.read_text(encoding="utf-8")
    after = text[text.index(heading) :]
    match = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert match, f"no sh block after {heading!r}"
    return _joined(match[1])


def _kubectl(text: str) -> list[list[str]]:
    """Each ``kubectl`` command of shell ``text`` (pipelines apart), as argv."""
    text = re.sub(r"(^|\s)#.*$", "", text, flags=re.MULTILINE)  # comments
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|;&\n")
    lexer.whitespace, lexer.whitespace_split = " \t\r", True  # a newline ends a command
    commands: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= set("|;&\n"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [argv for argv in commands if argv[:1] == ["kubectl"]]


def _namespace(argv: list[str]) -> str | None:
    for flag in ("-n", "--namespace"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    return None


def _of(overlay: Path, kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in rendered(overlay) if d["kind"] == kind}


def _overlay_namespace(overlay: Path) -> str:
    namespace: str = _of(overlay, "ConfigMap")["mastery-config"]["metadata"]["namespace"]
    return namespace


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


def test_the_rebuild_runs_in_the_namespace_of_its_overlay() -> None:
    prod, dev = _block("### Redis lost").split("# Plain Kafka")
    prod_commands = _kubectl(prod)
    assert len(prod_commands) >= 3  # get, apply, logs
    for argv in prod_commands:
        assert _namespace(argv) == _overlay_namespace(_PROD), shlex.join(argv)
    assert "mastery-consume" in _of(_PROD, "Deployment")

    (run,) = _kubectl(dev)
    assert _namespace(run) == _overlay_namespace(_DEV), shlex.join(run)
    overrides = json.loads(next(a.split("=", 1)[1] for a in run if a.startswith("--overrides=")))
    (container,) = overrides["spec"]["containers"]
    service = _of(_DEV, "Service")["on-completion"]["spec"]["template"]["spec"]
    (function,) = service["containers"]
    assert container["image"] == function["image"]
    config_maps = {e["configMapRef"]["name"] for e in container["envFrom"]}
    assert config_maps <= set(_of(_DEV, "ConfigMap"))
    redis = {e["name"]: e["valueFrom"] for e in function["env"]}["REDIS_URL"]
    assert {e["name"]: e["valueFrom"] for e in container["env"]}["REDIS_URL"] == redis


def test_renaming_the_batch_queues_names_every_file_that_spells_them() -> None:
    """``MASTERY_BATCH_TOPIC_PREFIX`` renames the queues in the code only: each file that
    spells them must be edited too, or batches are queued where nothing reads them."""
    text = _DEPLOY.read_text(encoding="utf-8")
    (paragraph,) = [p for p in text.split("\n\n") if "With `MASTERY_BATCH_TOPIC_PREFIX` set" in p]
    spelled = {
        str(path.relative_to(ROOT))
        for path in [*sorted(INFRA.rglob("*.yaml")), ROOT / "stack.yml"]
        if f"{BATCH_PREFIX}." in path.read_text(encoding="utf-8")
    }
    assert spelled, "the pattern finds none of the batch queues' manifests"
    missing = {path for path in spelled if f"`{path}`" not in paragraph}
    assert not missing, f"docs/deploy.md, 2. Kafka: renaming the queues misses {sorted(missing)}"
