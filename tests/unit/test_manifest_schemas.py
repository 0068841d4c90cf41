"""Every rendered manifest is valid against the schemas of its kind, and a broken one is not.

Renders each overlay and the topics with ``kubectl kustomize``, then validates every
object against the schemas vendored in infra/schemas (tests/manifests.py): Kubernetes
core kinds, Knative Serving, Eventing Kafka (KafkaSource, KafkaSink), KEDA, Strimzi,
Gateway API and the prometheus-operator (PodMonitor). The second half breaks a copy of
the manifests in the ways an edit would, and checks that the same checks refuse it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.manifests import (
    INFRA,
    KNATIVE,
    OVERLAYS,
    TOPICS,
    Manifest,
    RenderError,
    overlays,
    render,
    rendered,
    schemas,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

_COMPONENTS = KNATIVE / "components"


def _problems(docs: Iterable[Manifest]) -> list[str]:
    return [
        f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}: {error}"
        for doc in docs
        for error in schemas().errors(doc)
    ]


def _copy(tmp_path: Path) -> Path:
    """A copy of infra/ to break; returns its root."""
    shutil.copytree(INFRA, tmp_path / "infra", ignore=shutil.ignore_patterns("schemas"))
    return tmp_path / "infra"


def _with_every_component(infra: Path) -> Path:
    """An overlay in ``infra`` (a copy) that adds the components no real overlay uses."""
    used = {
        line.strip().removeprefix("- ../../components/").split(" ")[0]
        for overlay in overlays()
        for line in (overlay / "kustomization.yaml").read_text().splitlines()
        if "../../components/" in line
    }
    unused = sorted(p.name for p in _COMPONENTS.iterdir() if p.name not in used)
    overlay = infra / "knative" / "overlays" / "prod-with-the-rest"
    overlay.mkdir()
    shutil.copy(infra / "knative" / "overlays" / "prod" / "params.yaml", overlay)
    text = (infra / "knative" / "overlays" / "prod" / "kustomization.yaml").read_text()
    extra = "".join(f"  - ../../components/{name}\n" for name in unused)
    text = text.replace("components:\n", f"components:\n{extra}", 1)
    (overlay / "kustomization.yaml").write_text(text)
    (overlay / "namespace.yaml").write_text((OVERLAYS / "prod" / "namespace.yaml").read_text())
    return overlay


@pytest.mark.parametrize("directory", [*overlays(), TOPICS], ids=lambda p: p.name)
def test_rendered_manifests_are_valid(directory: Path) -> None:
    docs = rendered(directory)
    assert docs, f"{directory} renders nothing"
    assert _problems(docs) == []


def test_components_no_overlay_uses_are_valid_too(tmp_path: Path) -> None:
    overlay = _with_every_component(_copy(tmp_path))
    docs = render(overlay)
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert "mastery-batch-worker" in deployments
    assert _problems(docs) == []


def test_every_rendered_kind_has_a_schema() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for o in [*overlays(), TOPICS] for d in rendered(o)}
    assert kinds <= schemas().kinds()
    assert ("serving.knative.dev/v1", "Service") in kinds
    assert ("kafka.strimzi.io/v1", "KafkaTopic") in kinds


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# (file under infra/, text to replace, replacement, directory to render, expected in an error)
_BREAKAGES = [
    pytest.param(
        "knative/base/services/batch-worker.yaml",
        "timeoutSeconds: 330",
        "timeoutSecond: 330",
        "knative/overlays/dev",
        "'timeoutSecond' was unexpected",
        id="knative-service-unknown-field",
    ),
    pytest.param(
        "knative/base/sources/on-quiz.yaml",
        "retry: 10",
        "retry: ten",
        "knative/overlays/dev",
        "'ten' is not of type 'integer'",
        id="kafka-source-wrong-type",
    ),
    pytest.param(
        "knative/base/httproute.yaml",
        "type: Exact",
        "type: Exactly",
        "knative/overlays/prod",
        "'Exactly' is not one of",
        id="httproute-bad-enum",
    ),
    pytest.param(
        "knative/components/keda-consumer/consumer.yaml",
        "terminationGracePeriodSeconds: 30",
        "terminationGracePeriodSecond: 30",
        "knative/overlays/prod",
        "'terminationGracePeriodSecond' was unexpected",
        id="deployment-unknown-field",
    ),
    pytest.param(
        "knative/components/keda-consumer/consumer.yaml",
        "minReplicaCount: 0",
        'minReplicaCount: "none"',
        "knative/overlays/prod",
        "'none' is not of type 'integer'",
        id="scaled-object-wrong-type",
    ),
    pytest.param(
        "topics/topics.yaml",
        "partitions: 12",
        "partitions: twelve",
        "topics",
        "'twelve' is not of type 'integer'",
        id="kafka-topic-wrong-type",
    ),
    pytest.param(
        "knative/base/config.yaml",
        "automountServiceAccountToken: false",
        "automountServiceAccountToken: nope",
        "knative/overlays/dev",
        "'nope' is not of type 'boolean'",
        id="service-account-wrong-type",
    ),
]


@pytest.mark.parametrize(("file", "old", "new", "directory", "expected"), _BREAKAGES)
def test_a_broken_manifest_is_refused(
    tmp_path: Path, file: str, old: str, new: str, directory: str, expected: str
) -> None:
    # The unedited files pass (test_rendered_manifests_are_valid): the edit is the cause.
    infra = _copy(tmp_path)
    _edit(infra / file, old, new)
    problems = _problems(render(infra / directory))
    assert any(expected in p for p in problems), problems


def test_a_kind_without_a_schema_is_refused() -> None:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}
    assert schemas().errors(doc) == ["no schema for apiVersion v1 kind Secret (infra/schemas)"]


def test_a_missing_setting_fails_the_render(tmp_path: Path) -> None:
    """A params.yaml without a value the manifests need does not render at all."""
    infra = _copy(tmp_path)
    _edit(infra / "knative/overlays/prod/params.yaml", "imageTag:", "imageTagg:")
    with pytest.raises(RenderError, match="imageTag"):
        render(infra / "knative/overlays/prod")
