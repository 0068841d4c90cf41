"""The functions this project deploys: one source for the dev stack, manifests and tests."""

from __future__ import annotations

from dataclasses import dataclass

from mastery.domain import Component
from mastery.policy import Action

__all__ = ["FUNCTIONS", "FunctionSpec", "event_topic", "get"]


def event_topic(component: Component) -> str:
    """The Kafka topic that carries one component's learning events."""
    return f"mastery.{component}"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One deployable function.

    Attributes:
        name: service name (DNS-1123: Knative Service, stack.yml entry, gateway).
        routes: ``"METHOD /path"`` the gateway sends to it (besides health checks).
        component: for event handlers, the component whose topic triggers it.
        action: for HTTP functions, what they do to the student named in the body, or
            to the whole tenant (``mastery.policy.TENANT_WIDE``); the role x function
            matrix test walks these.
    """

    name: str
    routes: tuple[str, ...] = ()
    component: Component | None = None
    action: Action | None = None

    @property
    def directory(self) -> str:
        """Folder under ``functions/`` holding its ``main.py``."""
        return self.name.replace("-", "_")

    @property
    def topic(self) -> str | None:
        return event_topic(self.component) if self.component else None


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec("mastery-query", routes=("POST /mastery/query",), action=Action.READ),
    FunctionSpec("cohort-compare", routes=("POST /analytics/compare",), action=Action.READ),
    FunctionSpec("gdpr-export", routes=("POST /gdpr/export",), action=Action.EXPORT),
    FunctionSpec("gdpr-erase", routes=("POST /gdpr/erase",), action=Action.ERASE),
    FunctionSpec("audit-log", routes=("POST /audit/recent",), action=Action.AUDIT),
    *(FunctionSpec(f"on-{c}", component=c) for c in Component),
    FunctionSpec("prediction", routes=("POST /predictions/next-week",), action=Action.READ),
    FunctionSpec("recommendations", routes=("POST /recommendations/adaptive",), action=Action.READ),
    FunctionSpec(
        "mastery-history", routes=("POST /analytics/mastery-history",), action=Action.READ
    ),
)


def get(name: str) -> FunctionSpec:
    """Look a function up by name; raises ``KeyError`` for an unknown one."""
    for spec in FUNCTIONS:
        if spec.name == name:
            return spec
    raise KeyError(name)
