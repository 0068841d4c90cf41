"""The PodMonitors of components/prometheus-podmonitors scrape every pod the overlays run.

Each overlay is rendered with the component added, as an operator adds it
(``tests.manifests.with_components``), prod also with keda-batch-worker; from what is
rendered come the pods: a Deployment's from its template, a Knative Service's as Knative
makes them (``_knative_pod``). Every pod must be selected by a PodMonitor in its
namespace, scraped once, on the port where its process answers ``/metrics``; a PodMonitor
that selects a pod without its port, or selects nothing, is a mistake too. The second
half renames a label or a port in a copy of the manifests and checks that the same
check refuses it. Offline: nothing is applied.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.manifests import INFRA, KNATIVE, OVERLAYS, Manifest, render, with_components

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

_COMPONENTS = KNATIVE / "components"
_MONITORING = _COMPONENTS / "prometheus-podmonitors"
_BATCH_WORKER = _COMPONENTS / "keda-batch-worker"

# (overlay, components added besides the PodMonitors')
_RENDERINGS = [
    pytest.param("dev", [], id="dev"),
    pytest.param("prod", [], id="prod"),
    pytest.param("prod", [_BATCH_WORKER], id="prod-keda-batch-worker"),
]

# Knative (knative/serving: pkg/reconciler/configuration/resources/revision.go,
# pkg/reconciler/revision/resources/meta.go makeLabels and deploy.go
# makeServingContainer) labels a revision's pods with its Service's
# spec.template.metadata.labels, not the Service's metadata.labels, plus these; it
# replaces the user container's one port with one named user-port (v1.UserPortName),
# which the process gets as PORT.
_KNATIVE_USER_PORT = "user-port"
_KNATIVE_DEFAULT_PORT = 8080  # v1.DefaultUserPort, when the container names none


@dataclass(frozen=True)
class _Pod:
    owner: str  # "Deployment mastery-consume", "Service on-xapi"
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int]  # every container's named ports
    metrics: int | None  # the port where the process answers /metrics


def _knative_pod(service: Manifest) -> _Pod:
    name = service["metadata"]["name"]
    template = service["spec"]["template"]
    labels = dict(template.get("metadata", {}).get("labels", {}))
    labels |= {
        "serving.knative.dev/service": name,
        "serving.knative.dev/configuration": name,
        "serving.knative.dev/revision": f"{name}-00001",
    }
    labels.setdefault("app", f"{name}-00001")
    (container,) = template["spec"]["containers"]
    declared = container.get("ports", [])
    assert len(declared) <= 1, f"Service {name}: Knative allows one port"
    port = declared[0]["containerPort"] if declared else _KNATIVE_DEFAULT_PORT
    # The function serves /metrics on PORT, with the rest of its HTTP.
    namespace = service["metadata"]["namespace"]
    return _Pod(f"Service {name}", namespace, labels, {_KNATIVE_USER_PORT: port}, port)


def _deployment_pod(deployment: Manifest) -> _Pod:
    template = deployment["spec"]["template"]
    containers = template["spec"]["containers"]
    ports = {
        p["name"]: p["containerPort"]
        for container in containers
        for p in container.get("ports", [])
        if "name" in p
    }
    env = {e["name"]: e.get("value") for c in containers for e in c.get("env", [])}
    metrics = env.get("MASTERY_METRICS_PORT")
    return _Pod(
        f"Deployment {deployment['metadata']['name']}",
        deployment["metadata"]["namespace"],
        dict(template["metadata"].get("labels", {})),
        ports,
        int(metrics) if metrics and int(metrics) > 0 else None,
    )


def _pods(docs: Iterable[Manifest]) -> list[_Pod]:
    pods = []
    for doc in docs:
        if doc["kind"] == "Service" and doc["apiVersion"].startswith("serving.knative.dev/"):
            pods.append(_knative_pod(doc))
        elif doc["kind"] == "Deployment":
            pods.append(_deployment_pod(doc))
    return pods


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector; an empty one selects every pod."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not held:
            return False
    return True


def _selects(monitor: Manifest, pod: _Pod) -> bool:
    namespaces = monitor["spec"].get("namespaceSelector", {})
    if namespaces.get("any"):
        pass
    elif pod.namespace not in namespaces.get("matchNames", [monitor["metadata"]["namespace"]]):
        return False
    return _matches(monitor["spec"]["selector"], pod.labels)


def _problems(docs: list[Manifest]) -> list[str]:
    """Why the PodMonitors in ``docs`` do not scrape each pod once where it serves
    /metrics; empty when they do."""
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    problems = []
    for pod in _pods(docs):
        scraped = []
        for monitor in (m for m in monitors if _selects(m, pod)):
            name = monitor["metadata"]["name"]
            job = monitor["spec"].get("jobLabel")
            if job is not None and job not in pod.labels:
                problems.append(f"{pod.owner}: no label {job!r}, PodMonitor {name}'s jobLabel")
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                if endpoint.get("port") not in pod.ports:
                    problems.append(
                        f"{pod.owner}: selected by PodMonitor {name}, "
                        f"but has no port named {endpoint.get('port')!r}"
                    )
                    continue
                if endpoint.get("path", "/metrics") != "/metrics":
                    problems.append(f"{pod.owner}: PodMonitor {name} scrapes {endpoint['path']}")
                scraped.append((name, pod.ports[endpoint["port"]]))
        if pod.metrics is None:
            problems.append(f"{pod.owner}: serves no /metrics")
        elif not scraped:
            problems.append(f"{pod.owner}: no PodMonitor scrapes it")
        elif len(scraped) > 1:
            problems.append(f"{pod.owner}: scraped {len(scraped)} times: {scraped}")
        elif scraped[0][1] != pod.metrics:
            problems.append(
                f"{pod.owner}: scraped on port {scraped[0][1]}, /metrics is on {pod.metrics}"
            )
    return sorted(problems)


def _render(tmp_path: Path, overlay: Path, components: list[Path]) -> list[Manifest]:
    """``overlay`` with ``components`` and the PodMonitors' (of the same infra/)."""
    monitoring = overlay.parents[1] / "components" / _MONITORING.name
    return render(with_components(overlay, [*components, monitoring], tmp_path / "overlay"))


@pytest.mark.parametrize(("overlay", "extra"), _RENDERINGS)
def test_every_pod_is_scraped_once_where_it_serves_metrics(
    tmp_path: Path, overlay: str, extra: list[Path]
) -> None:
    docs = _render(tmp_path, OVERLAYS / overlay, extra)
    owners = {pod.owner for pod in _pods(docs)}
    assert "Service mastery-query" in owners
    assert "Service on-xapi" in owners
    if overlay == "prod":
        assert "Deployment mastery-consume" in owners
    assert _problems(docs) == []


def test_each_podmonitor_selects_pods(tmp_path: Path) -> None:
    """With every workload the components can add, no PodMonitor selects nothing."""
    docs = _render(tmp_path, OVERLAYS / "prod", [_BATCH_WORKER])
    pods = _pods(docs)
    assert {"Deployment mastery-consume", "Deployment mastery-batch-worker"} <= {
        p.owner for p in pods
    }
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"mastery-functions", "mastery-workers"}
    for monitor in monitors:
        assert monitor["metadata"]["namespace"] == "mastery"
        assert any(_selects(monitor, pod) for pod in pods), monitor["metadata"]["name"]


# (file under infra/, text to replace (every occurrence), replacement, expected problem)
_RENAMES = [
    pytest.param(
        "knative/base/function-defaults.yaml",
        "      app.kubernetes.io/part-of: mastery-engine\n",
        "      app.kubernetes.io/part-of: mastery\n",
        "Service mastery-query: no PodMonitor scrapes it",
        id="functions-pod-label",
    ),
    pytest.param(
        "knative/components/keda-consumer/consumer.yaml",
        "app.kubernetes.io/name: mastery-consume\n",
        "app.kubernetes.io/name: mastery-consumer\n",
        "Deployment mastery-consume: no PodMonitor scrapes it",
        id="consumer-name-label",
    ),
    pytest.param(
        "knative/components/keda-batch-worker/batch-worker.yaml",
        "- name: metrics #",
        "- name: prometheus #",
        "Deployment mastery-batch-worker: selected by PodMonitor mastery-workers, "
        "but has no port named 'metrics'",
        id="batch-worker-port-name",
    ),
    pytest.param(
        "knative/components/keda-consumer/consumer.yaml",
        'value: "9100"',
        'value: "9200"',
        "Deployment mastery-consume: scraped on port 9100, /metrics is on 9200",
        id="consumer-metrics-port",
    ),
    pytest.param(
        "knative/components/prometheus-podmonitors/podmonitors.yaml",
        "port: user-port",
        "port: http",
        "Service on-xapi: selected by PodMonitor mastery-functions, but has no port named 'http'",
        id="functions-endpoint-port",
    ),
]


@pytest.mark.parametrize(("file", "old", "new", "expected"), _RENAMES)
def test_a_renamed_label_or_port_is_refused(
    tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    # The unedited files pass (test_every_pod_is_scraped_once_where_it_serves_metrics).
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra, ignore=shutil.ignore_patterns("schemas"))
    path = infra / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new))
    knative = infra / "knative"
    docs = _render(
        tmp_path, knative / "overlays" / "prod", [knative / "components" / _BATCH_WORKER.name]
    )
    assert expected in _problems(docs), _problems(docs)
