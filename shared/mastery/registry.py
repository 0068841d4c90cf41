"""The functions this project deploys: one source for the dev stack, manifests and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from mastery.domain import Component
from mastery.policy import Action
from mastery.topics import BATCH_PREFIX, XAPI_TOPIC, batch_topics, event_topic

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["FUNCTIONS", "FunctionSpec", "get"]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One deployable function.

    Attributes:
        name: service name (DNS-1123: Knative Service, stack.yml entry, gateway).
        routes: ``"METHOD /path"`` the gateway sends to it (besides health checks).
        public: those of ``routes`` that take no token and answer no data (xAPI's
            ``GET /xapi/about``): no policy applies, no access record is written
            (``FunctionApp(public=...)`` says the same in the function's ``main.py``).
        component: for event handlers, the component whose topic triggers it.
        action: for HTTP functions, what they do to the student named in the body, or
            to the whole tenant (``mastery.policy.TENANT_WIDE``); the role x function
            matrix test walks these.
        consumes: for event handlers of other topics than a component's, those topics.
        worker: a ``mastery`` command that consumes ``topics`` natively; the dev stack
            runs it instead of one trigger per topic (it orders what triggers cannot).
        students_field: the body field naming the student(s): a list when it ends in "s".
        fixed_fields: what every request body carries besides the student(s), e.g. the
            intent of ``/process`` (the generated tests send it).
        protocol: ``"json"`` for a JSON body naming the student(s); ``"mcp"`` for MCP
            (JSON-RPC) over Streamable HTTP, whose tools each take their own arguments;
            ``"xapi"`` for xAPI statements (their actor names the student).
    """

    name: str
    routes: tuple[str, ...] = ()
    public: tuple[str, ...] = ()
    component: Component | None = None
    action: Action | None = None
    consumes: tuple[str, ...] = ()
    worker: str | None = None
    students_field: str = "student_id"
    fixed_fields: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    protocol: Literal["json", "mcp", "xapi"] = "json"

    @property
    def directory(self) -> str:
        """Folder under ``functions/`` holding its ``main.py``."""
        return self.name.replace("-", "_")

    @property
    def topic(self) -> str | None:
        return event_topic(self.component) if self.component else None

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic that triggers it (KafkaSource, kafka-connector, local triggers)."""
        return (event_topic(self.component),) if self.component else self.consumes

    def consumer_group(self, topic: str) -> str:
        """Its KafkaSource's group for ``topic``: one per source, never shared."""
        if len(self.topics) == 1:
            return f"mastery-{self.name}"
        return f"mastery-{self.name}-{topic.rsplit('.', 1)[-1]}"


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec("mastery-query", routes=("POST /mastery/query",), action=Action.READ),
    FunctionSpec("prediction", routes=("POST /predictions/next-week",), action=Action.READ),
    FunctionSpec("recommendations", routes=("POST /recommendations/adaptive",), action=Action.READ),
    FunctionSpec(
        "mastery-history", routes=("POST /analytics/mastery-history",), action=Action.READ
    ),
    FunctionSpec("cohort-compare", routes=("POST /analytics/compare",), action=Action.READ),
    FunctionSpec(
        "process",
        routes=("POST /process",),
        action=Action.READ,
        fixed_fields=MappingProxyType({"intent": "calculation"}),
    ),
    FunctionSpec("gdpr-export", routes=("POST /gdpr/export",), action=Action.EXPORT),
    FunctionSpec("gdpr-erase", routes=("POST /gdpr/erase",), action=Action.ERASE),
    FunctionSpec("audit-log", routes=("POST /audit/recent",), action=Action.AUDIT),
    *(FunctionSpec(f"on-{c}", component=c) for c in Component),
    FunctionSpec(
        "batch-mastery",
        routes=("POST /batch/mastery", "GET /batch/mastery/{batch_id}"),
        action=Action.BATCH,
        students_field="student_ids",
    ),
    # The deployed queues; the worker itself subscribes to those its prefix setting names.
    FunctionSpec("batch-worker", consumes=batch_topics(BATCH_PREFIX), worker="batch-worker"),
    FunctionSpec(
        "on-xapi",
        routes=("POST /xapi/statements", "PUT /xapi/statements", "GET /xapi/about"),
        public=("GET /xapi/about",),
        action=Action.INGEST,
        consumes=(XAPI_TOPIC,),
        protocol="xapi",
    ),
    FunctionSpec(
        "mcp",
        routes=("POST /mcp",),
        action=Action.READ,
        protocol="mcp",
    ),
)


def get(name: str) -> FunctionSpec:
    """Look a function up by name; raises ``KeyError`` for an unknown one."""
    for spec in FUNCTIONS:
        if spec.name == name:
            return spec
    raise KeyError(name)
