"""OpenAPI 3.1 document assembled from the routes and the pydantic schemas they declare.

Views declare what they accept and return with `@describe(...)`; the document is built from the
app's URL map, so a route without a description is a visible gap, not a silent one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from tributary.app.schemas import ErrorResponse

F = TypeVar("F", bound=Callable[..., Any])

ERROR_STATUSES = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    403: "The key lacks the scope or the project",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Body over the size limit",
    429: "Rate limited (see Retry-After and RateLimit-* headers)",
    503: "Database unavailable; retry",
}


@dataclass
class QueryParam:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass
class Operation:
    summary: str
    tag: str
    scope: str | None = None
    body: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | str] = field(default_factory=dict)
    query: list[QueryParam] = field(default_factory=list)
    errors: tuple[int, ...] = (400, 401, 403, 429)
    raw_body: str | None = None


def describe(**kwargs: Any) -> Callable[[F], F]:
    operation = Operation(**kwargs)

    def decorate(view: F) -> F:
        view.__dict__["openapi"] = operation
        return view

    return decorate


def openapi_path(rule: str) -> tuple[str, list[str]]:
    names = re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule)
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule), names


def build_document(app: Flask) -> dict[str, Any]:
    described: list[tuple[str, str, list[str], Operation]] = []
    models: set[type[BaseModel]] = {ErrorResponse}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        operation: Operation | None = getattr(view, "openapi", None)
        if operation is None:
            continue
        path, params = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            described.append((path, method.lower(), params, operation))
        if operation.body:
            models.add(operation.body)
        models.update(m for m in operation.responses.values() if isinstance(m, type))

    _, schemas = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for path, method, params, op in sorted(described, key=lambda d: (d[0], d[1])):
        paths.setdefault(path, {})[method] = _operation(op, params)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tributary",
            "version": app.config.get("TRIBUTARY_VERSION", "0"),
            "description": "Self-hosted headless CRM fed by webhooks.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(model: type[BaseModel] | str) -> dict[str, Any]:
    if isinstance(model, str):
        return {"description": model}
    return {
        "description": model.__doc__.strip().splitlines()[0] if model.__doc__ else model.__name__,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }


def implied_errors(op: Operation, params: list[str]) -> set[int]:
    """Statuses every route of a kind can answer, whatever its `errors` list says: the query
    string guard (400 on NUL), authentication (401/403), the rate limit (429) and the key lookup
    in the database (503), a path naming nothing (404), a body over the limit (413)."""
    implied = {400}
    if op.scope:
        implied |= {401, 403, 429, 503}
    if params:
        implied.add(404)
    if op.body or op.raw_body:
        implied.add(413)
    return implied


def _operation(op: Operation, params: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": {}}
    if op.scope:
        out["security"] = [{"apiKey": []}]
        out["description"] = f"Requires an API key with the `{op.scope}` scope."
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": q.schema,
        }
        for q in op.query
    ]
    if parameters:
        out["parameters"] = parameters
    if op.body:
        ref = {"$ref": f"#/components/schemas/{op.body.__name__}"}
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    elif op.raw_body:
        out["requestBody"] = {
            "required": True,
            "description": op.raw_body,
            "content": {"application/json": {"schema": {}}},
        }
    for status, model in op.responses.items():
        out["responses"][str(status)] = _ref(model)
    for status in sorted(set(op.errors) | implied_errors(op, params)):
        out["responses"].setdefault(
            str(status),
            {
                "description": ERROR_STATUSES.get(status, "Error"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
            },
        )
    return out
