"""The deployment manifests and ``mastery.registry.FUNCTIONS`` describe the same functions.

Both ways: every registered function has its code, its stack.yml entry, its Knative
Service and (for event handlers) its KafkaSource with a dead-letter KafkaSink; and
every function folder, stack.yml entry, Knative Service and KafkaSource belongs to a
registered function. The Knative checks read what ``kubectl kustomize`` renders from
each overlay (tests/manifests.py), so they see what would be applied. Offline: nothing
is applied or built.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from mastery.events.kafka import kafka_common
from mastery.registry import FUNCTIONS, FunctionSpec
from mastery.settings import Settings, load
from mastery.topics import BATCH_PREFIX, XAPI_TOPIC, all_topics, dlq_topic, topic_config
from tests.manifests import (
    KNATIVE,
    OVERLAYS,
    ROOT,
    TOPICS,
    load_all,
    overlays,
    render,
    rendered,
)

if TYPE_CHECKING:
    from collections.abc import Callable

_FUNCTIONS_DIR = ROOT / "functions"
_STACK = ROOT / "stack.yml"
_DEV, _PROD = OVERLAYS / "dev", OVERLAYS / "prod"

_STACK_IMAGE = "${{REGISTRY:-ghcr.io/mastery-engine}}/{name}:${{TAG:-0.1.0}}"
_MIN_SCALE = "autoscaling.knative.dev/min-scale"
_MAX_SCALE = "autoscaling.knative.dev/max-scale"
# Module level, so a nested or commented-out definition does not count.
_HANDLER_DEF = re.compile(r"^async def handler\(", re.MULTILINE)

_EVENT_HANDLERS = tuple(spec for spec in FUNCTIONS if spec.topics)
_COMPONENT_TOPICS = {spec.topic for spec in _EVENT_HANDLERS if spec.topic}
_TRIGGERS = tuple((spec, topic) for spec in _EVENT_HANDLERS for topic in spec.topics)
_OVERLAYS = overlays()

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


@cache
def _stack_functions() -> dict[str, Manifest]:
    (stack,) = load_all(_STACK)
    functions: dict[str, Manifest] = stack["functions"]
    return functions


def _of(overlay: Path, kind: str) -> dict[str, Manifest]:
    """Rendered objects of one kind, by ``metadata.name``."""
    return {doc["metadata"]["name"]: doc for doc in rendered(overlay) if doc["kind"] == kind}


@cache
def _params(overlay: Path) -> Manifest:
    (params,) = load_all(overlay / "params.yaml")
    spec: Manifest = params["spec"]
    return spec


def _container(service: Manifest) -> Manifest:
    containers = _dig(service, "spec", "template", "spec", "containers") or [{}]
    assert len(containers) == 1, "one container per function"
    container: Manifest = containers[0]
    return container


def _sources_for(overlay: Path, name: str) -> list[Manifest]:
    return [
        doc
        for doc in _of(overlay, "KafkaSource").values()
        if _dig(doc, "spec", "sink", "ref", "name") == name
    ]


def _function_folders() -> set[str]:
    return {p.parent.name for p in _FUNCTIONS_DIR.glob("*/main.py")}


def test_there_are_dev_and_prod_overlays() -> None:
    assert {p.name for p in _OVERLAYS} >= {"dev", "prod"}


# -- every registered function has its code and manifests --------------------------------


@pytest.mark.parametrize("spec", FUNCTIONS, ids=_ids)
def test_function_source_defines_handler(spec: FunctionSpec) -> None:
    main = _FUNCTIONS_DIR / spec.directory / "main.py"
    assert main.is_file(), f"{spec.name}: {main.relative_to(ROOT)} is missing"
    source = main.read_text(encoding="utf-8")
    assert _HANDLER_DEF.search(source), f"{spec.name}: {main.name} defines no `async def handler`"


@pytest.mark.parametrize("spec", FUNCTIONS, ids=_ids)
def test_stack_entry(spec: FunctionSpec) -> None:
    entry = _stack_functions().get(spec.name)
    assert entry is not None, f"stack.yml has no function {spec.name!r}"
    assert entry["lang"] == "dockerfile"
    assert _dig(entry, "build_args", "FUNCTION") == spec.directory
    assert entry["image"] == _STACK_IMAGE.format(name=spec.name)
    # The kafka-connector invokes every function whose annotation names the topic,
    # so an HTTP function must carry none.
    assert _dig(entry, "annotations", "topic") == (",".join(spec.topics) or None)


@pytest.mark.parametrize("spec", _EVENT_HANDLERS, ids=_ids)
def test_stack_event_handlers_retry_503_and_429(spec: FunctionSpec) -> None:
    annotations = _stack_functions()[spec.name]["annotations"]
    codes = set(annotations["com.openfaas.retry.codes"].split(","))
    assert {"429", "503"} <= codes
    assert int(annotations["com.openfaas.retry.attempts"]) >= 3


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
@pytest.mark.parametrize("spec", FUNCTIONS, ids=_ids)
def test_knative_service(overlay: Path, spec: FunctionSpec) -> None:
    service = _of(overlay, "Service").get(spec.name)
    assert service is not None, f"{overlay.name} renders no Service {spec.name!r}"
    assert service["apiVersion"] == "serving.knative.dev/v1"
    # No URL on Knative's external domain: the HTTPRoute goes through the local gateway.
    assert service["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    params = _params(overlay)
    annotations = _dig(service, "spec", "template", "metadata", "annotations") or {}
    assert annotations.get(_MIN_SCALE) == "0"
    assert annotations.get(_MAX_SCALE) == params["scaling"]["maxScale"]
    pod = service["spec"]["template"]["spec"]
    assert pod["containerConcurrency"] > 0
    assert 0 < pod["timeoutSeconds"] <= 600  # Knative's default max-revision-timeout-seconds
    container = _container(service)
    assert container["image"] == f"{params['imageRegistry']}/{spec.name}:{params['imageTag']}"
    assert _dig(container, "ports", 0, "containerPort") == 8080
    assert _dig(container, "readinessProbe", "httpGet", "path") == "/ready"
    assert _dig(container, "livenessProbe", "httpGet", "path") == "/health"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(_dig(container, "resources", kind) or {})
    env = {e["name"]: e for e in container["env"]}
    assert _dig(env, "REDIS_URL", "valueFrom", "secretKeyRef", "name") == params["secrets"]["redis"]
    jwt = _dig(env, "MASTERY_JWT_SECRET", "valueFrom", "secretKeyRef", "name")
    assert jwt == params["secrets"]["jwt"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
def test_timeouts_fit_the_batch_deadline(overlay: Path) -> None:
    """A batch may run MASTERY_BATCH_DEADLINE_SECONDS: its request must outlive it."""
    config = _of(overlay, "ConfigMap")["mastery-config"]["data"]
    deadline = int(config["MASTERY_BATCH_DEADLINE_SECONDS"])
    services = _of(overlay, "Service")
    for name in ("batch-mastery", "batch-worker"):
        assert services[name]["spec"]["template"]["spec"]["timeoutSeconds"] > deadline
    for source in _sources_for(overlay, "batch-worker"):
        timeout = _dig(source, "spec", "delivery", "timeout")
        assert timeout is not None
        assert int(timeout.removeprefix("PT").removesuffix("S")) > deadline


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
def test_concurrency_leaves_room_in_the_redis_pool(overlay: Path) -> None:
    """Each request holds at most two Redis connections at once (a batch chunk's
    read-ahead); so many requests must fit the pool, or a burst waits on itself."""
    config = _of(overlay, "ConfigMap")["mastery-config"]["data"]
    pool = int(config.get("MASTERY_REDIS_MAX_CONNECTIONS", Settings().redis_max_connections))
    for name, service in _of(overlay, "Service").items():
        concurrency = _dig(service, "spec", "template", "spec", "containerConcurrency")
        assert concurrency is not None, name
        assert 0 < concurrency * 2 <= pool, name


@pytest.mark.parametrize(("spec", "topic"), _TRIGGERS, ids=[f"{s.name}-{t}" for s, t in _TRIGGERS])
def test_kafka_source_with_dead_letter_sink(spec: FunctionSpec, topic: str) -> None:
    """The dev overlay delivers every topic with a KafkaSource, as the local stack does."""
    sources = [s for s in _sources_for(_DEV, spec.name) if _dig(s, "spec", "topics") == [topic]]
    assert len(sources) == 1, f"want one KafkaSource of {topic} to {spec.name!r}, got {sources}"
    (source,) = sources
    assert source["apiVersion"].startswith("sources.knative.dev/")
    # One consumer group per source: a shared group would split the records between them.
    assert _dig(source, "spec", "consumerGroup") == spec.consumer_group(topic)
    assert _dig(source, "spec", "sink", "ref", "kind") == "Service"
    # Stated, not defaulted: the defaults are `ordered` and `latest` (skips old events).
    assert _dig(source, "spec", "ordering") in {"ordered", "unordered"}
    assert _dig(source, "spec", "initialOffset") == "earliest"
    assert _dig(source, "spec", "delivery", "retry") >= 3
    assert _dig(source, "spec", "delivery", "backoffPolicy") == "exponential"

    dead_letter = _dig(source, "spec", "delivery", "deadLetterSink", "ref")
    assert dead_letter is not None, f"{spec.name}: KafkaSource has no deadLetterSink"
    assert dead_letter.get("kind") == "KafkaSink"
    sink = _of(_DEV, "KafkaSink").get(dead_letter.get("name"))
    assert sink is not None, f"{spec.name}: no KafkaSink {dead_letter.get('name')!r}"
    assert _dig(sink, "spec", "topic") == dlq_topic(topic)


@pytest.mark.parametrize("spec", _EVENT_HANDLERS, ids=_ids)
def test_no_kafka_source_of_other_topics(spec: FunctionSpec) -> None:
    topics = [t for s in _sources_for(_DEV, spec.name) for t in _dig(s, "spec", "topics") or []]
    assert sorted(topics) == sorted(spec.topics)


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
def test_every_event_topic_is_consumed_once(overlay: Path) -> None:
    """By a KafkaSource or by `mastery consume`, never both (each event applied twice)."""
    by_sources = [t for s in _of(overlay, "KafkaSource").values() for t in s["spec"]["topics"]]
    consume = _of(overlay, "Deployment").get("mastery-consume")
    by_consume = consume["spec"]["template"]["spec"]["containers"][0]["args"][1:] if consume else []
    assert sorted(by_sources + by_consume) == sorted(t for _, t in _TRIGGERS)


def test_prod_consumes_events_natively_scaled_by_keda() -> None:
    deployment = _of(_PROD, "Deployment")["mastery-consume"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "consume"
    assert set(args[1:]) == _COMPONENT_TOPICS
    scaled = _of(_PROD, "ScaledObject")["mastery-consume"]
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["maxReplicaCount"] == _params(_PROD)["scaling"]["kedaMaxReplicas"]
    triggers = scaled["spec"]["triggers"]
    assert {t["metadata"]["topic"] for t in triggers} == _COMPONENT_TOPICS
    auths = _of(_PROD, "TriggerAuthentication")
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == "mastery-consume"
        assert meta["offsetResetPolicy"] == "earliest"
        assert int(meta["lagThreshold"]) > 0
        assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
        assert trigger["authenticationRef"]["name"] in auths


def _workers() -> dict[str, Manifest]:
    """Every Deployment running `mastery consume` or `mastery batch-worker`, in the
    manifest files (components an overlay may not use yet) and as each overlay renders
    it; by where it is."""
    docs = [
        (str(p.relative_to(ROOT)), d) for p in sorted(KNATIVE.rglob("*.yaml")) for d in load_all(p)
    ]
    docs += [(o.name, d) for o in _OVERLAYS for d in rendered(o)]
    found = {}
    for where, doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue  # a JSON patch is a list
        container = _container(doc)
        argv = [*container.get("command", []), *container.get("args", [])]
        if argv[:1] == ["mastery"] and argv[1:2] in (["consume"], ["batch-worker"]):
            found[f"{where}: {doc['metadata']['name']}"] = doc
    return found


def test_consumers_and_batch_workers_serve_metrics_on_a_declared_port() -> None:
    """They serve no HTTP: MASTERY_METRICS_PORT is their only /metrics (the batch alerts
    and the consumer's stuck alert read it), and a containerPort a PodMonitor can name."""
    workers = _workers()
    names = {key.split(": ")[1] for key in workers}
    assert names == {"mastery-consume", "mastery-batch-worker"}, names
    for where, deployment in workers.items():
        container = _container(deployment)
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        port = env.get("MASTERY_METRICS_PORT")
        assert port is not None, where
        assert int(port) > 0, where
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        assert ports.get("metrics") == int(port), where


def test_prod_reaches_kafka_with_tls_and_sasl() -> None:
    secret = _params(_PROD)["secrets"]["kafkaAuth"]
    for source in _of(_PROD, "KafkaSource").values():
        net = source["spec"]["net"]
        assert net["sasl"]["enable"]
        assert net["tls"]["enable"]
        assert net["sasl"]["password"]["secretKeyRef"]["name"] == secret
    for sink in _of(_PROD, "KafkaSink").values():
        assert sink["spec"]["auth"]["secret"]["ref"]["name"] == secret
    (auth,) = _of(_PROD, "TriggerAuthentication").values()
    assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == {secret}


# What the overlay's Kafka Secret holds (docs/deploy.md creates it with these keys).
_KAFKA_SECRET = {
    "protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "user": "mastery",
    "password": "not-a-real-password",
    "ca.crt": "-----BEGIN CERTIFICATE-----\n",
}


def _engine_kafka(
    overlay: Path, workload: Manifest, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The librdkafka settings the engine builds in ``workload``'s container, its
    environment filled in as the kubelet would: the ConfigMap, literal values, keys of the
    Kafka Secret, and that Secret's mounted files (written under ``tmp``)."""
    secret = _params(overlay)["secrets"]["kafkaAuth"]
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= _of(overlay, "ConfigMap")[source["configMapRef"]["name"]]["data"]
    mounts: dict[str, Path] = {}
    for volume in pod.get("volumes", []):
        if _dig(volume, "secret", "secretName") == secret:
            (mount,) = (m for m in container["volumeMounts"] if m["name"] == volume["name"])
            where = tmp / volume["name"]
            where.mkdir(parents=True)
            for item in volume["secret"]["items"]:
                (where / item["path"]).write_text(_KAFKA_SECRET[item["key"]])
            mounts[mount["mountPath"]] = where
    for var in container.get("env", []):
        ref = _dig(var, "valueFrom", "secretKeyRef")
        if ref is None:
            value = var["value"]
            for path, where in mounts.items():
                value = value.replace(path, str(where))
            env[var["name"]] = value
        elif ref["name"] == secret:
            env[var["name"]] = _KAFKA_SECRET[ref["key"]]
    for name in [n for n in os.environ if n.startswith(("KAFKA_", "MASTERY_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return kafka_common(load())


def _engine_workloads(overlay: Path) -> dict[str, Manifest]:
    """Every Knative Service and Deployment: each runs the engine's own Kafka clients."""
    return {**_of(overlay, "Service"), **_of(overlay, "Deployment")}


def test_prod_engine_clients_reach_kafka_with_tls_and_sasl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The functions' DLQ and audit producers and `mastery consume` use the listener the
    overlay names (TLS + SASL) with the Secret's credentials, not plaintext."""
    workloads = _engine_workloads(_PROD)
    assert "mastery-consume" in workloads
    for name, workload in workloads.items():
        conf = _engine_kafka(_PROD, workload, tmp_path / name, monkeypatch)
        assert conf["bootstrap.servers"] == _params(_PROD)["kafka"]["bootstrapServers"]
        assert conf["security.protocol"] == "SASL_SSL", name
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512", name
        assert (conf["sasl.username"], conf["sasl.password"]) == ("mastery", "not-a-real-password")
        assert Path(conf["ssl.ca.location"]).read_text() == _KAFKA_SECRET["ca.crt"]


def test_kafka_sasl_tls_covers_the_batch_worker_component(tmp_path: Path) -> None:
    """docs/deploy.md: keda-batch-worker is listed before kafka-sasl-tls, which then
    authenticates its Deployment and its ScaledObject too."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()

    def there(path: str) -> str:  # kustomize takes relative paths only
        return os.path.relpath((_PROD / path).resolve(), overlay)

    (base,) = load_all(_PROD / "kustomization.yaml")
    components = [there(c) for c in base["components"]]
    sasl = next(i for i, c in enumerate(components) if c.endswith("kafka-sasl-tls"))
    components.insert(sasl, there("../../components/keda-batch-worker"))
    for name in ("namespace.yaml", "params.yaml"):
        (overlay / name).write_text((_PROD / name).read_text())
    base["resources"] = [r if r.endswith(".yaml") else there(r) for r in base["resources"]]
    base["components"] = components
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(base))
    objects = render(overlay)
    auths = {d["metadata"]["name"] for d in objects if d["kind"] == "TriggerAuthentication"}
    worker = [d for d in objects if d["kind"] in ("ScaledObject", "Deployment")]
    assert {d["metadata"]["name"] for d in worker} >= {"mastery-batch-worker", "mastery-consume"}
    for doc in worker:
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                assert trigger["authenticationRef"]["name"] in auths, doc["metadata"]["name"]
        else:
            names = {e["name"] for e in _container(doc)["env"]}
            assert "KAFKA_SECURITY_PROTOCOL" in names, doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
def test_public_route_matches_the_local_gateway(overlay: Path) -> None:
    """The HTTPRoute sends each registered route's path to its function, as `mastery dev` does."""
    (route,) = _of(overlay, "HTTPRoute").values()
    namespace = route["metadata"]["namespace"]
    assert route["spec"]["hostnames"] == [_params(overlay)["route"]["host"]]
    served: dict[tuple[str, str], str] = {}
    for rule in route["spec"]["rules"]:
        (match,) = rule["matches"]
        (rewrite,) = rule["filters"]
        host = rewrite["urlRewrite"]["hostname"]
        function, rest = host.split(".", 1)
        assert rest == f"{namespace}.svc.cluster.local"
        served[(match["path"]["type"], match["path"]["value"])] = function
    wanted = {}
    for spec in FUNCTIONS:
        for route_ in spec.routes:
            path = route_.split(" ", 1)[1]
            key = ("PathPrefix", path.split("{")[0].rstrip("/")) if "{" in path else ("Exact", path)
            wanted[key] = spec.name
    assert served == wanted


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
def test_settings_are_set_once(overlay: Path) -> None:
    """Every "param: ..." placeholder is filled and no image is :latest or unqualified."""
    text = repr(rendered(overlay))
    assert "param:" not in text
    assert "NAMESPACE" not in text
    assert ":latest" not in text
    kafka = _params(overlay)["kafka"]["bootstrapServers"]
    config = _of(overlay, "ConfigMap")["mastery-config"]["data"]
    assert config["KAFKA_BOOTSTRAP_SERVERS"] == kafka
    assert config["MASTERY_ERASURE_REPLICAS"] == _params(overlay)["redis"]["erasureReplicas"]
    assert config["MASTERY_XAPI_TENANTS"] == _params(overlay)["xapi"]["tenants"]
    for source in _of(overlay, "KafkaSource").values():
        assert source["spec"]["bootstrapServers"] == [kafka]


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
def test_the_config_map_holds_settings_the_engine_reads(
    overlay: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key of mastery-config is a variable the settings read, and its value loads (a
    misspelt name would be ignored, a bad value stop every pod at its start)."""
    config = _of(overlay, "ConfigMap")["mastery-config"]["data"]
    read = {f.validation_alias for f in Settings.model_fields.values()}
    assert set(config) <= read, set(config) - read
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    load()


@pytest.mark.parametrize("overlay", _OVERLAYS, ids=lambda p: p.name)
def test_no_secret_is_ever_applied(overlay: Path) -> None:
    """Secrets are referenced only: a rendered Secret would overwrite the real one."""
    kinds = {doc["kind"] for doc in rendered(overlay)}
    assert "Secret" not in kinds
    config = _of(overlay, "ConfigMap")["mastery-config"]["data"]
    assert "REDIS_URL" not in config
    assert not any("SECRET" in key or "PASSWORD" in key for key in config)


def test_no_secret_in_any_manifest_file() -> None:
    """Not even one that an overlay leaves out: `kubectl apply -f` could pick it up."""
    for path in [*KNATIVE.rglob("*.yaml"), *TOPICS.rglob("*.yaml")]:
        for doc in load_all(path):  # JSON patches are lists: no kind
            kind = doc.get("kind") if isinstance(doc, dict) else None
            assert kind != "Secret", f"{path.relative_to(ROOT)} defines a Secret"


# -- nothing is deployed that the registry does not know -------------------------------------


def _unregistered_folders() -> set[str]:
    return _function_folders() - {spec.directory for spec in FUNCTIONS}


def _unregistered_stack_functions() -> set[str]:
    return set(_stack_functions()) - {spec.name for spec in FUNCTIONS}


def _unregistered_services() -> set[str]:
    return {name for overlay in _OVERLAYS for name in _of(overlay, "Service")} - {
        spec.name for spec in FUNCTIONS
    }


def _unregistered_sources() -> set[str]:
    handlers = {spec.name for spec in _EVENT_HANDLERS}
    return {
        name
        for overlay in _OVERLAYS
        for name, doc in _of(overlay, "KafkaSource").items()
        if _dig(doc, "spec", "sink", "ref", "name") not in handlers
    }


def _orphan_kafka_sinks() -> set[str]:
    orphans: set[str] = set()
    for overlay in _OVERLAYS:
        referenced = {
            _dig(doc, "spec", "delivery", "deadLetterSink", "ref", "name")
            for doc in _of(overlay, "KafkaSource").values()
        }
        orphans |= set(_of(overlay, "KafkaSink")) - referenced
    return orphans


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


# -- topics --------------------------------------------------------------------------------


@cache
def _topics() -> dict[str, Manifest]:
    return {doc["spec"]["topicName"]: doc for doc in rendered(TOPICS)}


def test_a_kafka_topic_for_every_topic() -> None:
    assert sorted(_topics()) == sorted(all_topics(BATCH_PREFIX))


@pytest.mark.parametrize("topic", all_topics(BATCH_PREFIX))
def test_topic_settings(topic: str) -> None:
    spec = _topics()[topic]["spec"]
    assert spec["replicas"] == 3
    assert spec["config"]["min.insync.replicas"] == 2
    # The dev stack creates its topics with the same retention (create_topics).
    wanted = topic_config(topic, BATCH_PREFIX)
    assert {k: str(v) for k, v in spec["config"].items() if k in wanted} == wanted


@pytest.mark.parametrize("topic", sorted({*_COMPONENT_TOPICS, XAPI_TOPIC}))
def test_event_topics_outlive_the_window(topic: str) -> None:
    """`mastery rebuild` restores Redis from them: they must hold the 90-day window."""
    retention_days = int(_topics()[topic]["spec"]["config"]["retention.ms"]) / 86_400_000
    assert retention_days >= 90
    partitions = _topics()[topic]["spec"]["partitions"]
    assert partitions >= _params(_PROD)["scaling"]["kedaMaxReplicas"]


def test_every_base_file_is_rendered() -> None:
    """A manifest file the base kustomization does not list would never be applied."""
    listed = set(load_all(KNATIVE / "base" / "kustomization.yaml")[0]["resources"])
    files = {
        str(p.relative_to(KNATIVE / "base"))
        for p in (KNATIVE / "base").rglob("*.yaml")
        if p.name not in {"kustomization.yaml", "function-defaults.yaml"}
    }
    assert files == listed
