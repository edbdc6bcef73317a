"""The shared verification helpers: Standard Webhooks through `standardwebhooks` with an
injectable clock (the published vector), the ±300 s window, secret formats, shared secrets."""

from __future__ import annotations

import pytest

from tributary.connectors.base import Headers, VerificationFailed
from tributary.connectors.testkit import new_standard_secret, standard_webhook_headers
from tributary.connectors.verification import standard_secrets, verify_shared_secret, verify_standard_webhook

# shared/reference/auth-provider-webhooks.md §1.3
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def vector_headers(prefix: str = "webhook", **overrides: str) -> Headers:
    headers = {
        f"{prefix}-id": MSG_ID,
        f"{prefix}-timestamp": str(TIMESTAMP),
        f"{prefix}-signature": SIGNATURE,
    }
    headers.update(overrides)
    return Headers(headers)


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
def test_the_published_vector_verifies_at_its_own_time(prefix: str) -> None:
    assert (
        verify_standard_webhook(BODY, vector_headers(prefix), [SECRET], prefix=prefix, now=TIMESTAMP)
        == MSG_ID
    )


@pytest.mark.parametrize(("skew", "accepted"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_the_window_is_300_seconds_both_ways(skew: int, accepted: bool) -> None:
    now = TIMESTAMP - skew  # the signature is `skew` seconds away from now
    if accepted:
        verify_standard_webhook(BODY, vector_headers(), [SECRET], now=now)
    else:
        with pytest.raises(VerificationFailed, match="old" if skew < 0 else "future"):
            verify_standard_webhook(BODY, vector_headers(), [SECRET], now=now)


def test_any_of_several_secrets_and_signatures_may_match() -> None:
    other = new_standard_secret()
    headers = vector_headers(**{"webhook-signature": f"v1a,c2lnbmF0dXJl v1,AAAA {SIGNATURE}"})
    assert verify_standard_webhook(BODY, headers, [other, SECRET], now=TIMESTAMP) == MSG_ID
    with pytest.raises(VerificationFailed, match="does not match"):
        verify_standard_webhook(BODY, vector_headers(), [other], now=TIMESTAMP)


def test_supabase_secret_forms_are_unwrapped() -> None:
    assert standard_secrets(["v1,whsec_abc|whsec_def", " whsec_ghi ", ""]) == [
        "whsec_abc",
        "whsec_def",
        "whsec_ghi",
    ]
    assert verify_standard_webhook(BODY, vector_headers(), [f"v1,{SECRET}"], now=TIMESTAMP) == MSG_ID


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"webhook-id": ""}, "missing signature headers"),
        ({"webhook-timestamp": "1614265330.5"}, "integer Unix seconds"),
        ({"webhook-timestamp": "9" * 20}, "integer Unix seconds"),
        ({"webhook-signature": "v2,abc v1a,def"}, "no v1 signature"),
        ({"webhook-signature": "v1,%%%"}, "no v1 signature"),
    ],
)
def test_bad_headers_say_what_is_wrong(headers: dict[str, str], message: str) -> None:
    with pytest.raises(VerificationFailed, match=message):
        verify_standard_webhook(BODY, vector_headers(**headers), [SECRET], now=TIMESTAMP)


def test_bodies_that_are_not_utf8_and_malformed_secrets_never_crash() -> None:
    with pytest.raises(VerificationFailed, match="UTF-8"):
        verify_standard_webhook(b"\xff\xfe", vector_headers(), [SECRET], now=TIMESTAMP)
    with pytest.raises(VerificationFailed):
        verify_standard_webhook(BODY, vector_headers(), ["whsec_!!!", "whsec_"], now=TIMESTAMP)
    with pytest.raises(VerificationFailed, match="no signing secret"):
        verify_standard_webhook(BODY, vector_headers(), [], now=TIMESTAMP)


def test_freshly_signed_messages_verify_with_the_wall_clock() -> None:
    secret = new_standard_secret()
    headers = standard_webhook_headers(BODY, secret, msg_id="msg_now")
    assert verify_standard_webhook(BODY, Headers(headers), [secret]) == "msg_now"


@pytest.mark.parametrize("value", ["s3cret", "Bearer s3cret", "bearer   s3cret", "  s3cret  "])
def test_a_shared_secret_matches_verbatim_or_as_bearer(value: str) -> None:
    verify_shared_secret(Headers({"Authorization": value}), "authorization", ["other", "s3cret"])


@pytest.mark.parametrize("value", ["", "s3cre", "s3cret!", "Basic s3cret", "Bearer", "Bearer Bearer s3cret"])
def test_a_wrong_shared_secret_is_refused(value: str) -> None:
    with pytest.raises(VerificationFailed):
        verify_shared_secret(Headers({"Authorization": value}), "authorization", ["s3cret"])


def test_a_source_without_secrets_accepts_nothing() -> None:
    with pytest.raises(VerificationFailed, match="no secret"):
        verify_shared_secret(Headers({"Authorization": ""}), "authorization", [])
