"""OpenAPI 3.1, generated from the routes and their pydantic models."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from shared.core.problems import ProblemCode
from shared.web.batches import NDJSON
from shared.web.http import Route

__all__ = ["Problem", "openapi_document"]

_PARAM = re.compile(r"{(\w+)}")
_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "pilot_id": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,63}$"},
    "family_id": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,63}$"},
}
_ERROR_STATUSES = {
    "400": "Malformed JSON or header",
    "401": "No token, or a token that cannot be trusted",
    "403": "Wrong role or pilot (another team's family or request answers 404)",
    "404": "Not found",
    "408": "The body did not arrive in time",
    "409": "Conflict with what is recorded, or an Idempotency-Key reused",
    "413": "Body larger than 1 MiB",
    "415": "Body is not application/json",
    "422": "Validation failed, or the domain refuses the command",
}


class FieldProblem(BaseModel):
    """One field that failed validation."""

    field: str
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: ProblemCode = Field(
        description="What went wrong, for a program to branch on (the README lists each)."
    )
    instance: str | None = None
    errors: list[FieldProblem] | None = None


def openapi_document(
    *,
    title: str,
    version: str,
    description: str,
    routes: Sequence[Route],
    port: int,
    webhooks: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The service's OpenAPI document; ``webhooks``: the requests it sends to subscribers;
    ``port``: where the local stack serves it."""
    missing = [f"{r.method} {r.path}" for r in routes if not r.operation_id]
    if missing:
        raise ValueError(f"routes without an operation_id: {missing}")
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Problem, "serialization")
    ]
    for route in routes:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.response is not None:
            wanted.append((route.response, "serialization"))
    refs, defs = models_json_schema(wanted, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [
            {
                "url": "{scheme}://{host}:{port}",
                "description": "The service: the local stack's is http on 127.0.0.1; the "
                "compose stack's proxy answers https on the same port",
                "variables": {
                    "scheme": {"default": "http", "enum": ["http", "https"]},
                    "host": {"default": "127.0.0.1"},
                    "port": {"default": str(port)},
                },
            }
        ],
        "paths": paths,
        **({"webhooks": dict(webhooks)} if webhooks else {}),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


Refs = Mapping[tuple[Any, Literal["validation", "serialization"]], dict[str, Any]]


def _operation(route: Route, refs: Refs) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.operation_id,
    }
    if route.description:
        operation["description"] = route.description
    if route.tags:
        operation["tags"] = list(route.tags)
    parameters = _parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None and route.body_content_type == NDJSON:
        operation["requestBody"] = {"required": True, "content": _lines(route.body, refs)}
    elif route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.body_content_type: {"schema": refs[(route.body, "validation")]}},
        }
    elif route.file_body:
        operation["requestBody"] = {
            "required": True,
            "content": {kind: {"schema": _text(kind)} for kind in route.file_body},
        }
    responses: dict[str, Any] = {str(route.status): _success(route, refs)}
    for status, meaning in route.also:
        responses[str(status)] = {**_success(route, refs), "description": meaning}
    if route.roles is not None:
        operation["security"] = [{"bearer": []}]
        operation["x-roles"] = sorted(route.roles)
    if route.roles is not None or route.body is not None:  # a body may be refused
        responses.update(_problems(route, refs[(Problem, "serialization")]))
    operation["responses"] = responses
    return operation


def _success(route: Route, refs: Refs) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK"}
    if route.response is not None and route.content_type == NDJSON:
        success["content"] = _lines(route.response, refs, "serialization")
    elif route.response is not None:
        success["content"] = {
            route.content_type: {"schema": refs[(route.response, "serialization")]}
        }
    elif route.content_type != "application/json":
        success["content"] = {route.content_type: {"schema": _text(route.content_type)}}
    return success


def _lines(
    model: type[BaseModel],
    refs: Refs,
    mode: Literal["validation", "serialization"] = "validation",
) -> dict[str, Any]:
    """An NDJSON body: one JSON document per line, each as ``model`` says. OpenAPI 3.1 has no
    word for a sequence of documents (3.2's itemSchema): the schema is the line's, as
    validators that read NDJSON line by line expect, and the description says so."""
    return {
        NDJSON: {
            "schema": {
                **refs[(model, mode)],
                "description": f"Each line: one {model.__name__} (a JSON document)",
            }
        }
    }


def _text(content_type: str) -> dict[str, Any]:
    """A body that is a file: bytes (a zip), or text (CSV, OFX, HTML, metrics)."""
    if content_type.startswith("text/") or content_type == "application/x-ofx":
        return {"type": "string", "contentMediaType": content_type}
    return {"type": "string", "format": "binary", "contentMediaType": content_type}


def _problems(route: Route, problem: dict[str, Any]) -> dict[str, Any]:
    """The problem answers a guarded route may give."""
    body_only = {"400", "408", "413", "415", "422"}
    responses: dict[str, Any] = {
        status: {
            "description": text,
            "content": {"application/problem+json": {"schema": problem}},
        }
        for status, text in _ERROR_STATUSES.items()
        if status not in body_only
        or route.body is not None
        or route.file_body
        or (status == "422" and route.query is not None)  # a bad query parameter
    }
    unavailable = (
        "Unavailable: the database cannot be reached just now (unavailable); retry after the "
        "seconds Retry-After says, with the same Idempotency-Key"
    )
    if route.may_be_unavailable:
        unavailable += (
            "; or not yet consistent: a view has not caught up with what the caller has seen "
            "(not_yet_consistent), and nothing is recorded"
        )
    responses["503"] = {
        "description": unavailable,
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}},
        "content": {"application/problem+json": {"schema": problem}},
    }
    return responses


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _PARAM_SCHEMAS.get(name, {"type": "string"}),
        }
        for name in _PARAM.findall(route.path)
    ]
    if route.query is not None:
        query_schema = route.query.model_json_schema()
        required = set(query_schema.get("required", []))
        parameters += [
            {"name": name, "in": "query", "required": name in required, "schema": schema}
            for name, schema in query_schema.get("properties", {}).items()
        ]
    if route.command is not None:  # a batch's lines carry keys of their own
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                "description": "A retry with the same key and body returns the first response.",
            }
        )
    return parameters
