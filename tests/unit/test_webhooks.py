"""Webhook signing and back-off, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.reporting.deliveries import RetryPolicy, backoff
from services.reporting.webhooks import new_secret, signature


def test_a_signature_verifies_with_the_standard_webhooks_package() -> None:
    secret = new_secret()
    now = int(datetime.now(UTC).timestamp())
    body = '{"specversion":"1.0","id":"e-1","type":"family.enrolled"}'
    headers = {
        "webhook-id": "e-1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature(secret, "e-1", now, body),
    }
    assert Webhook(secret).verify(body, headers)["id"] == "e-1"
    with pytest.raises(WebhookVerificationError):  # another body, or another secret
        Webhook(secret).verify(body.replace("e-1", "e-2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_secrets_are_new_each_time_and_of_the_standard_form() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(secret.startswith("whsec_") and len(secret) == 6 + 44 for secret in secrets)


def test_back_off_doubles_from_the_first_retry_up_to_the_cap() -> None:
    policy = RetryPolicy(first_retry=timedelta(seconds=5), max_backoff=timedelta(hours=1))
    waits = [backoff(policy, attempts).total_seconds() for attempts in range(1, 14)]
    assert waits[:6] == [5, 10, 20, 40, 80, 160]
    assert waits[-1] == 3600
    assert waits == sorted(waits)
    assert backoff(policy, 10_000) == timedelta(hours=1)  # no overflow however many tries


def test_a_day_of_retries_is_a_few_dozen_tries() -> None:
    """The default policy tries a failing receiver about 33 times before the day is out."""
    policy = RetryPolicy()
    elapsed, attempts = timedelta(0), 0
    while elapsed < policy.window:
        attempts += 1
        elapsed += backoff(policy, attempts)
    assert 25 <= attempts <= 40
