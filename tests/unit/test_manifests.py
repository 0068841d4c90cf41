"""The deployment manifests and ``mastery.registry.FUNCTIONS`` describe the same functions.

Both ways: every registered function has its code, its stack.yml entry, its Knative
Service and (for event handlers) its KafkaSource with a dead-letter KafkaSink; and
every function folder, stack.yml entry, Knative Service and KafkaSource belongs to a
registered function. Offline: the files are only parsed, nothing is applied or built.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from mastery.registry import FUNCTIONS, FunctionSpec

if TYPE_CHECKING:
    from collections.abc import Callable

_ROOT = Path(__file__).resolve().parents[2]
_FUNCTIONS_DIR = _ROOT / "functions"
_STACK = _ROOT / "stack.yml"
_DOCKERFILE = _ROOT / "infra" / "Dockerfile"
_KNATIVE_DIR = _ROOT / "infra" / "knative"
_KEDA_CONSUMER = _ROOT / "infra" / "keda" / "consumer.yaml"
_KEDA_BATCH_WORKER = _ROOT / "infra" / "keda" / "batch-worker.yaml"

_IMAGE = "ghcr.io/mastery-engine/{name}:latest"
_MIN_SCALE = "autoscaling.knative.dev/min-scale"
# Module level, so a nested or commented-out definition does not count.
_HANDLER_DEF = re.compile(r"^async def handler\(", re.MULTILINE)

_EVENT_HANDLERS = tuple(spec for spec in FUNCTIONS if spec.topics)
_TRIGGERS = tuple((spec, topic) for spec in _EVENT_HANDLERS for topic in spec.topics)

Manifest = dict[str, Any]


def _ids(spec: FunctionSpec) -> str:
    return spec.name


def _dig(obj: Any, *path: str | int) -> Any:
    """``obj[p0][p1]...``, or None where a key or index is missing."""
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def _load_all(path: Path) -> list[Manifest]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@cache
def _stack_functions() -> dict[str, Manifest]:
    (stack,) = _load_all(_STACK)
    functions: dict[str, Manifest] = stack["functions"]
    return functions


@cache
def _knative_docs() -> tuple[Manifest, ...]:
    return tuple(doc for path in sorted(_KNATIVE_DIR.glob("*.yaml")) for doc in _load_all(path))


def _knative(kind: str) -> dict[str, Manifest]:
    """Knative manifests of one kind, by ``metadata.name``."""
    return {doc["metadata"]["name"]: doc for doc in _knative_docs() if doc.get("kind") == kind}


def _container(service: Manifest) -> Manifest:
    containers = _dig(service, "spec", "template", "spec", "containers") or [{}]
    assert len(containers) == 1, "one container per function"
    container: Manifest = containers[0]
    return container


def _sources_for(name: str) -> list[Manifest]:
    return [
        doc
        for doc in _knative("KafkaSource").values()
        if _dig(doc, "spec", "sink", "ref", "name") == name
    ]


def _function_folders() -> set[str]:
    return {p.parent.name for p in _FUNCTIONS_DIR.glob("*/main.py")}


# -- every registered function has its code and manifests --------------------------------


@pytest.mark.parametrize("spec", FUNCTIONS, ids=_ids)
def test_function_source_defines_handler(spec: FunctionSpec) -> None:
    main = _FUNCTIONS_DIR / spec.directory / "main.py"
    assert main.is_file(), f"{spec.name}: {main.relative_to(_ROOT)} is missing"
    source = main.read_text(encoding="utf-8")
    assert _HANDLER_DEF.search(source), f"{spec.name}: {main.name} defines no `async def handler`"


@pytest.mark.parametrize("spec", FUNCTIONS, ids=_ids)
def test_stack_entry(spec: FunctionSpec) -> None:
    entry = _stack_functions().get(spec.name)
    assert entry is not None, f"stack.yml has no function {spec.name!r}"
    assert entry["lang"] == "dockerfile"
    assert _dig(entry, "build_args", "FUNCTION") == spec.directory
    assert entry["image"] == _IMAGE.format(name=spec.name)
    # The kafka-connector invokes every function whose annotation names the topic,
    # so an HTTP function must carry none.
    assert _dig(entry, "annotations", "topic") == (",".join(spec.topics) or None)


@pytest.mark.parametrize("spec", FUNCTIONS, ids=_ids)
def test_knative_service(spec: FunctionSpec) -> None:
    service = _knative("Service").get(spec.name)
    assert service is not None, f"infra/knative has no Service {spec.name!r}"
    assert service["apiVersion"] == "serving.knative.dev/v1"
    annotations = _dig(service, "spec", "template", "metadata", "annotations") or {}
    assert annotations.get(_MIN_SCALE) == "0"
    container = _container(service)
    assert container.get("image") == _IMAGE.format(name=spec.name)
    assert _dig(container, "ports", 0, "containerPort") == 8080
    assert _dig(container, "readinessProbe", "httpGet", "path") == "/ready"
    assert _dig(container, "livenessProbe", "httpGet", "path") == "/health"


@pytest.mark.parametrize(("spec", "topic"), _TRIGGERS, ids=[f"{s.name}-{t}" for s, t in _TRIGGERS])
def test_kafka_source_with_dead_letter_sink(spec: FunctionSpec, topic: str) -> None:
    sources = [s for s in _sources_for(spec.name) if _dig(s, "spec", "topics") == [topic]]
    assert len(sources) == 1, f"want one KafkaSource of {topic} to {spec.name!r}, got {sources}"
    (source,) = sources
    assert source["apiVersion"].startswith("sources.knative.dev/")
    # One consumer group per source: a shared group would split the records between them.
    assert _dig(source, "spec", "consumerGroup") == spec.consumer_group(topic)
    assert _dig(source, "spec", "sink", "ref", "kind") == "Service"

    dead_letter = _dig(source, "spec", "delivery", "deadLetterSink", "ref")
    assert dead_letter is not None, f"{spec.name}: KafkaSource has no deadLetterSink"
    assert dead_letter.get("kind") == "KafkaSink"
    sink = _knative("KafkaSink").get(dead_letter.get("name"))
    assert sink is not None, f"{spec.name}: no KafkaSink {dead_letter.get('name')!r}"
    assert _dig(sink, "spec", "topic") == f"{topic}.dlq"


@pytest.mark.parametrize("spec", _EVENT_HANDLERS, ids=_ids)
def test_no_kafka_source_of_other_topics(spec: FunctionSpec) -> None:
    topics = [t for s in _sources_for(spec.name) for t in _dig(s, "spec", "topics") or []]
    assert sorted(topics) == sorted(spec.topics)


# -- nothing is deployed that the registry does not know -------------------------------------


def _unregistered_folders() -> set[str]:
    return _function_folders() - {spec.directory for spec in FUNCTIONS}


def _unregistered_stack_functions() -> set[str]:
    return set(_stack_functions()) - {spec.name for spec in FUNCTIONS}


def _unregistered_services() -> set[str]:
    return set(_knative("Service")) - {spec.name for spec in FUNCTIONS}


def _unregistered_sources() -> set[str]:
    handlers = {spec.name for spec in _EVENT_HANDLERS}
    return {
        name
        for name, doc in _knative("KafkaSource").items()
        if _dig(doc, "spec", "sink", "ref", "name") not in handlers
    }


def _orphan_kafka_sinks() -> set[str]:
    referenced = {
        _dig(doc, "spec", "delivery", "deadLetterSink", "ref", "name")
        for doc in _knative("KafkaSource").values()
    }
    return set(_knative("KafkaSink")) - referenced


@pytest.mark.parametrize(
    ("where", "strays"),
    [
        pytest.param("functions/", _unregistered_folders, id="functions"),
        pytest.param("stack.yml", _unregistered_stack_functions, id="stack.yml"),
        pytest.param("Knative Services", _unregistered_services, id="knative-services"),
        pytest.param("KafkaSources (by sink)", _unregistered_sources, id="kafka-sources"),
        pytest.param("KafkaSinks no source uses", _orphan_kafka_sinks, id="kafka-sinks"),
    ],
)
def test_nothing_unregistered(where: str, strays: Callable[[], set[str]]) -> None:
    found = strays()
    assert not found, f"{where}: {sorted(found)} not in mastery.registry.FUNCTIONS"


def test_knative_names_are_unique() -> None:
    seen: set[tuple[str, str]] = set()
    for doc in _knative_docs():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"infra/knative defines {key[0]} {key[1]!r} twice"
        seen.add(key)


# -- the shared image and the Kafka-native consumer -------------------------------------------


def test_dockerfile_is_parametrised_and_asgi() -> None:
    text = _DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG FUNCTION\b", text, re.MULTILINE)
    assert "--asgi" in text
    assert "FUNCTION_SOURCE=/app/functions/${FUNCTION}/main.py" in text


def test_keda_consumer_covers_every_learning_event_topic() -> None:
    docs = {doc["kind"]: doc for doc in _load_all(_KEDA_CONSUMER)}
    topics = {spec.topic for spec in _EVENT_HANDLERS if spec.component is not None}
    args = _dig(docs["Deployment"], "spec", "template", "spec", "containers", 0, "args")
    assert args[0] == "consume"
    assert set(args[1:]) == topics
    triggers = _dig(docs["ScaledObject"], "spec", "triggers")
    assert {_dig(t, "metadata", "topic") for t in triggers} == topics
    assert {_dig(t, "metadata", "consumerGroup") for t in triggers} == {"mastery-consume"}


def test_keda_batch_worker_serves_every_batch_topic() -> None:
    (spec,) = [s for s in FUNCTIONS if s.worker == "batch-worker"]
    docs = {doc["kind"]: doc for doc in _load_all(_KEDA_BATCH_WORKER)}
    args = _dig(docs["Deployment"], "spec", "template", "spec", "containers", 0, "args")
    assert args == [spec.worker]
    assert _dig(docs["ScaledObject"], "spec", "minReplicaCount") == 0
    triggers = _dig(docs["ScaledObject"], "spec", "triggers")
    assert [_dig(t, "metadata", "topic") for t in triggers] == list(spec.topics)
    assert {_dig(t, "metadata", "consumerGroup") for t in triggers} == {"mastery-batch-worker"}
