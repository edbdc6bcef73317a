"""Schemathesis against our own /openapi.json: every documented operation, requests generated from
the document (schema-valid and schema-invalid), a fixed seed. Each response must be a documented
status with a body matching its documented schema and never a 5xx. Part of the default run, on
both backends (`.ci/run`).

schemathesis's pytest fixture loader does not run under pytest 9, so the test drives its Python
API directly: one hypothesis run per operation and generation mode, against the WSGI app."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.auths import AuthStorage
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tributary.runtime.process import Runtime

pytestmark = pytest.mark.fuzz

# Schema-valid requests may still be refused by rules a JSON schema cannot state: an opaque
# `cursor`, a project slug that does not exist yet, a timestamp in the future. Every such refusal
# is a documented 4xx, which the remaining checks hold it to.
EXCLUDED_CHECKS = [positive_data_acceptance]
SEED = 20261201
# Examples per operation and mode: about a minute for the whole API on an idle 2-core machine.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))


def _bearer(token: str) -> AuthStorage[str]:
    """The admin key as schemathesis's authentication, so that it knows which requests carry it
    (a negative case without the header expects a 401)."""

    class AdminKey:
        def get(self, case: Any, context: Any) -> str:
            return token

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    storage: AuthStorage[str] = AuthStorage()
    storage.auth(refresh_interval=None)(AdminKey)
    return storage


def _fuzz(operation: Any, mode: GenerationMode, auth: AuthStorage[str], tally: Counter[str]) -> None:
    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode, auth_storage=auth))
    def run(case: Any) -> None:
        response = case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
        tally["requests"] += 1
        tally[f"{response.status_code // 100}xx"] += 1

    try:
        run()
    except Unsatisfiable:
        # Nothing to get wrong: an operation without parameters or body has no invalid request.
        if mode is GenerationMode.POSITIVE:
            raise


def test_every_operation_answers_as_documented(
    app: Flask, runtime: Runtime, admin_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    tally: Counter[str] = Counter()
    auth = _bearer(admin_key)
    failures: dict[str, str] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, auth, tally)
            except (
                Exception,
                BaseExceptionGroup,
            ) as exc:  # every operation runs; all failures are reported together
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert tally["5xx"] == 0
    with capsys.disabled():
        print(f"\nschemathesis: {len(operations)} operations, {dict(sorted(tally.items()))}")


def test_routes_document_the_statuses_they_answer(client: FlaskClient) -> None:
    """The cases the fuzzer found undocumented, stated directly (app/openapi.py implied_errors)."""
    paths = client.get("/openapi.json").get_json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "400" in statuses, (method, path)  # the query-string guard answers on every route
            if "{" in path:
                assert "404" in statuses, (method, path)
            if "requestBody" in operation:
                assert "413" in statuses, (method, path)
            if "security" in operation:
                assert {"401", "403", "429", "503"} <= statuses, (method, path)
    assert "404" in paths["/v1/sources/{source_id}"]["get"]["responses"]
    assert "409" in paths["/v1/identify"]["post"]["responses"]
    assert "409" in paths["/v1/ping"]["post"]["responses"]
