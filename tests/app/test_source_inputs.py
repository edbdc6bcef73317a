"""Source inputs a newcomer gets wrong: a placeholder pasted as the secret, a malformed Stripe key."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tributary.connectors.base import InvalidOptions
from tributary.connectors.stripe import StripeConnector


@pytest.mark.parametrize(
    "placeholder", ["whsec_…", "whsec_...", "<your signing secret>", "whsec_xxxxxxxx", "changeme", "secret"]
)
def test_placeholder_secrets_are_refused(
    client: FlaskClient, admin: dict[str, str], placeholder: str
) -> None:
    created = client.post(
        "/v1/sources", json={"connector": "stripe", "secrets": [placeholder]}, headers=admin
    )
    assert created.status_code == 400, created.get_json()
    assert "placeholder" in created.get_json()["error"]["message"]
    source = client.post("/v1/sources", json={"connector": "stripe"}, headers=admin).get_json()
    added = client.post(f"/v1/sources/{source['id']}/secrets", json={"secret": placeholder}, headers=admin)
    assert added.status_code == 400 and "placeholder" in added.get_json()["error"]["message"]


def test_real_looking_secrets_are_accepted(client: FlaskClient, admin: dict[str, str]) -> None:
    for secret in ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"):
        created = client.post("/v1/sources", json={"connector": "clerk", "secrets": [secret]}, headers=admin)
        assert created.status_code == 201, created.get_json()


@pytest.mark.parametrize(
    ("api_key", "says"),
    [
        ("sk_test_123", "too short: 3 characters after 'sk_test_', at least 8"),
        ("pk_test_51SRZwvLkdIwHu7ix", "none of those prefixes"),
        ("sk_test_abc-def-ghi-jkl", "only hold letters, digits and underscores after 'sk_test_'"),
        ("sk_live_" + "a" * 300, "too long"),
        (42, "got a int"),
    ],
)
def test_stripe_api_key_errors_say_what_is_wrong(api_key: object, says: str) -> None:
    with pytest.raises(InvalidOptions) as raised:
        StripeConnector().validate_options({"api_key": api_key})
    assert says in str(raised.value)
    assert "abc-def" not in str(raised.value) and "SRZwv" not in str(raised.value)
