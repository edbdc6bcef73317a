"""Domain errors are mapped once to HTTP (app/errors.py) and once to the CLI (app/cli)."""

from __future__ import annotations

import pytest

from tributary.app.cli import cli_error
from tributary.app.domain_errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from tributary.app.errors import HTTP_STATUS, http_error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Invalid("invalid_options", "bad"), 400),
        (Forbidden("project_forbidden", "no"), 403),
        (NotFound("source_not_found", "none", {"id": "src_x"}), 404),
        (Conflict("project_exists", "taken"), 409),
    ],
)
def test_each_domain_error_has_one_http_status(error: DomainError, status: int) -> None:
    answer = http_error(error)
    assert (answer.status, answer.code, answer.message, answer.details) == (
        status,
        error.code,
        error.message,
        error.details,
    )


def test_every_kind_of_domain_error_is_mapped() -> None:
    assert set(HTTP_STATUS) == set(DomainError.__subclasses__())


def test_the_cli_shows_the_message_or_one_line_per_refused_option() -> None:
    assert cli_error(Conflict("project_exists", "a project with slug 'x' already exists")).message == (
        "a project with slug 'x' already exists"
    )
    # A validation error without details is a message like any other.
    assert cli_error(Invalid("validation_error", "a CSV import takes a project")).message == (
        "a CSV import takes a project"
    )
    refused = Invalid(
        "validation_error",
        "the query string is invalid",
        [{"field": "params.plan", "message": "bad value"}, {"field": "updated_after", "message": "no"}],
    )
    assert cli_error(refused).message == "invalid options:\n  --param plan: bad value\n  --updated-after: no"
