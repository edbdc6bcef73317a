"""/openapi.json is a valid OpenAPI 3.1 document describing every API route."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from tributary.app.openapi import openapi_path

UNDOCUMENTED = {"/static/<path:filename>", "/openapi.json"}


def test_document_is_valid_openapi_31(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_and_method_is_documented(app: Flask, client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for rule in app.url_map.iter_rules():
        if rule.rule in UNDOCUMENTED or rule.rule.startswith("/dashboard"):
            continue
        path, _ = openapi_path(rule.rule)
        assert path in paths, f"{rule.rule} is not in /openapi.json"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], f"{method} {rule.rule} is not in /openapi.json"


def test_identify_schema_is_the_validation_schema(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    identify = document["components"]["schemas"]["IdentifyRequest"]
    assert identify["required"] == ["email"]
    assert identify["additionalProperties"] is False
    assert {"params", "params_once", "params_unset", "timestamp", "message_id"} <= set(identify["properties"])
