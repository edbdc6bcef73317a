"""The test kit's signers agree with the providers' own libraries (and the Standard Webhooks
signer is that library's)."""

from __future__ import annotations

import base64
import re
import time

import pytest
import stripe
from standardwebhooks.webhooks import Webhook

from tributary.connectors.testkit import (
    new_standard_secret,
    standard_webhook_headers,
    static_secret_headers,
    stripe_headers,
    stripe_signature,
    svix_headers,
    workos_signature,
)


def test_stripe_signer_is_accepted_by_the_stripe_library() -> None:
    body = b'{"id": "evt_1", "object": "event"}'
    header = stripe_signature(body, "whsec_test", timestamp=int(time.time()))
    assert stripe.WebhookSignature.verify_header(body, header, "whsec_test", tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, header, "whsec_other", tolerance=300)
    assert set(stripe_headers(body, "whsec_test")) == {"Stripe-Signature"}


def test_standard_webhook_signer_matches_the_published_vector_and_library() -> None:
    # Svix / Standard Webhooks regression vector (shared/reference/auth-provider-webhooks.md §1.3).
    headers = svix_headers(
        b'{"test": 2432232314}',
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
    )
    assert headers == {
        "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "svix-timestamp": "1614265330",
        "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = new_standard_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    body = b'{"type": "user.created"}'
    fresh = standard_webhook_headers(body, secret, msg_id="msg_1")
    assert Webhook(secret).verify(body, fresh) == {"type": "user.created"}


def test_workos_signer_format() -> None:
    header = workos_signature(b"{}", "sk", timestamp_ms=1632409405772)
    assert re.fullmatch(r"t=1632409405772, v1=[0-9a-f]{64}", header)
    assert header != workos_signature(b"{}", "other", timestamp_ms=1632409405772)


def test_static_secret_headers() -> None:
    assert static_secret_headers("s3cret") == {"Authorization": "s3cret"}
    assert static_secret_headers("s3cret", "X-Hook", scheme="Bearer") == {"X-Hook": "Bearer s3cret"}
