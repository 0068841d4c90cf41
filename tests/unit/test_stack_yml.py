"""stack.yml against a strict model of the faas-cli stack file (docs/reference/yaml.md).

Every field faas-cli reads is modelled with its type; any other key is an error
(``extra="forbid"``), so a misspelt field, which faas-cli would silently ignore, fails
here. The file is read as faas-cli reads it: YAML merge keys resolved, ``${VAR:-default}``
substituted from an empty environment.
"""

from __future__ import annotations

import re
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mastery.registry import FUNCTIONS, FunctionSpec
from tests.manifests import ROOT

_STACK = ROOT / "stack.yml"
_SUBST = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Provider(_Strict):
    name: Literal["openfaas"]
    gateway: str | None = None


class Template(_Strict):
    name: str
    source: str | None = None


class Configuration(_Strict):
    templates: list[Template] | None = None
    copy_: list[str] | None = Field(None, alias="copy")  # `copy` would shadow BaseModel.copy


class Resources(_Strict):
    memory: str | None = None
    cpu: str | None = None


class Function(_Strict):
    """faas-cli's stack.Function (build-time and deploy-time fields)."""

    lang: str
    handler: str
    image: str
    fprocess: str | None = None
    namespace: str | None = None
    skip_build: bool | None = None
    build_options: list[str] | None = None
    build_args: dict[str, str] | None = None
    build_secrets: dict[str, str] | None = None
    platforms: str | None = None
    environment: dict[str, str] | None = None
    environment_file: list[str] | None = None
    secrets: list[str] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    constraints: list[str] | None = None
    limits: Resources | None = None
    requests: Resources | None = None
    readonly_root_filesystem: bool | None = None


class Stack(_Strict):
    version: str
    provider: Provider
    configuration: Configuration | None = None
    functions: dict[str, Function]


def _as_faas_cli_reads_it() -> dict[str, object]:
    text = _SUBST.sub(lambda m: m.group(2) or "", _STACK.read_text(encoding="utf-8"))
    doc: dict[str, object] = yaml.safe_load(text)
    doc["version"] = str(doc["version"])  # `version: 1.0` is a float to YAML, a string to Go
    return doc


def test_stack_yml_matches_the_faas_cli_schema() -> None:
    stack = Stack.model_validate(_as_faas_cli_reads_it())
    assert set(stack.functions) == {spec.name for spec in FUNCTIONS}


def test_the_model_refuses_an_unknown_field() -> None:
    doc = _as_faas_cli_reads_it()
    functions = doc["functions"]
    assert isinstance(functions, dict)
    functions["mastery-query"] = {**functions["mastery-query"], "enviroment": {"A": "b"}}
    with pytest.raises(ValidationError, match="enviroment"):
        Stack.model_validate(doc)


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
def test_every_function_is_limited_secret_and_scales_to_zero(spec: FunctionSpec) -> None:
    stack = Stack.model_validate(_as_faas_cli_reads_it())
    fn = stack.functions[spec.name]
    assert fn.limits is not None
    assert fn.limits.memory
    assert fn.limits.cpu
    assert fn.readonly_root_filesystem is True
    assert set(fn.secrets or ()) == {"redis-url", "mastery-jwt-secret"}
    assert "REDIS_URL" not in (fn.environment or {})
    assert (fn.labels or {}).get("com.openfaas.scale.zero") == "true"
    assert (fn.annotations or {}).get("com.openfaas.ready.http.path") == "/ready"


def test_settings_are_written_once() -> None:
    """No copy-pasted environment: each value occurs once in the file."""
    text = _STACK.read_text(encoding="utf-8")
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "com.openfaas.retry.codes", "com.openfaas.scale.zero"):
        assert len(re.findall(rf"^\s+{re.escape(key)}:", text, re.MULTILINE)) == 1, key


def test_the_build_context_has_what_the_dockerfile_copies() -> None:
    """faas-cli builds in a copy of the handler folder plus `configuration.copy`."""
    stack = Stack.model_validate(_as_faas_cli_reads_it())
    assert stack.configuration is not None
    copied = set(stack.configuration.copy_ or ())
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text(encoding="utf-8")
    sources = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE)
    for source in (s for line in sources for s in line.split()):
        assert source.split("/")[0] in copied, source
