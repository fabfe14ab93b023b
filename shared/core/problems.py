"""Every problem ``code`` the ledger answers with, once: what a case system may branch on.

A code is typed (:data:`ProblemCode`), so an error naming one that is not here does not pass
the type check; the OpenAPI documents enumerate them, and the README's table is this list
(tests/unit/test_problems.py keeps the three the same). A code is never reused for another
meaning; a new one is added here, with its status and what the caller should do.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["PROBLEMS", "Problem", "ProblemCode"]

ProblemCode = Literal[
    # The request itself
    "malformed_request",
    "malformed_json",
    "bad_idempotency_key",
    "validation_failed",
    "unsupported_media_type",
    "request_timeout",
    "payload_too_large",
    "method_not_allowed",
    "http_error",
    "empty_batch",
    "batch_too_large",
    "event_too_large",
    # Who is asking
    "unauthorized",
    "missing_token",
    "bad_token",
    "token_expired",
    "forbidden",
    "forbidden_role",
    "forbidden_pilot",
    "forbidden_team",
    "forbidden_requester",
    "self_approval",
    # What the domain refuses
    "not_found",
    "unprocessable",
    "policy_violation",
    "unknown_family",
    "unknown_category",
    "unknown_stratum",
    "control_arm",
    "family_exited",
    "invalid_date",
    "invalid_period",
    "occurred_at_in_future",
    "occurred_at_too_old",
    "occurred_at_before_enrolment",
    "purchased_on_in_future",
    "purchased_on_too_old",
    "purchased_on_before_enrolment",
    "exceeds_family_cap",
    "insufficient_funds",
    "exceeds_allocation",
    "exceeds_approved",
    "exceeds_purchase",
    "unreadable_statement",
    "webhook_url_not_allowed",
    # What is already recorded
    "conflict",
    "concurrent_modification",
    "idempotency_key_reused",
    "already_enrolled",
    "already_exited",
    "already_requested",
    "already_purchased",
    "request_withdrawn",
    "request_closed",
    "request_rejected",
    "not_approved",
    "not_pending",
    "seed_not_secret",
    "nothing_to_reveal",
    "held_behind",
    # Not now: retry after Retry-After
    "unavailable",
    "not_yet_consistent",
    "identity_provider_unavailable",
    "purposes_unavailable",
    # The ledger's own fault
    "key_custody",
    "internal_error",
]


class Problem(NamedTuple):
    status: int
    meaning: str


PROBLEMS: dict[ProblemCode, Problem] = {
    "malformed_request": Problem(
        400, "Not HTTP the service can read (a request line or header over 8,190 bytes)."
    ),
    "malformed_json": Problem(400, "The body is not JSON, is nested too deeply or holds NUL."),
    "bad_idempotency_key": Problem(400, "Idempotency-Key is not 1 to 128 printable characters."),
    "validation_failed": Problem(
        422, "The body or query does not match the schema; `errors` names each field."
    ),
    "unsupported_media_type": Problem(415, "The body is not of a content type the call takes."),
    "request_timeout": Problem(408, "The body did not arrive in time."),
    "payload_too_large": Problem(413, "The body is larger than 1 MiB."),
    "method_not_allowed": Problem(405, "The path does not take this method (see `Allow`)."),
    "http_error": Problem(400, "Another HTTP-level refusal; the status says which."),
    "empty_batch": Problem(422, "A batch with no line."),
    "batch_too_large": Problem(413, "A batch with more lines than a batch may hold."),
    "event_too_large": Problem(422, "The event the command would record is too large to publish."),
    "unauthorized": Problem(401, "The token cannot be trusted."),
    "missing_token": Problem(401, "No bearer token."),
    "bad_token": Problem(
        401, "The token's signature, issuer, audience, lifetime or claims are not valid."
    ),
    "token_expired": Problem(401, "The token has expired: get a new one."),
    "forbidden": Problem(403, "The caller may not do this."),
    "forbidden_role": Problem(403, "The caller's role may not call this operation."),
    "forbidden_pilot": Problem(403, "The token is for another pilot."),
    "forbidden_team": Problem(
        403, "Another team's family or request, where the caller names it (enrolling into it)."
    ),
    "forbidden_requester": Problem(
        403, "A social worker's request names someone else in `requested_by`."
    ),
    "self_approval": Problem(403, "A manager deciding a request they made."),
    "not_found": Problem(
        404, "No such pilot, family, request or resource (or another team's: not shown)."
    ),
    "unprocessable": Problem(422, "The command cannot be carried out."),
    "policy_violation": Problem(422, "The pilot's policy does not allow the command."),
    "unknown_family": Problem(422, "The request names a family the pilot has not enrolled."),
    "unknown_category": Problem(422, "The category is not one of the pilot's."),
    "unknown_stratum": Problem(422, "The stratum is not one of the pilot's strata."),
    "control_arm": Problem(422, "The family is in the control arm and has no budget."),
    "family_exited": Problem(422, "The family left the pilot before this date."),
    "invalid_date": Problem(422, "A date before the family's enrolment."),
    "invalid_period": Problem(422, "The period given is not one of the family's periods."),
    "occurred_at_in_future": Problem(422, "`occurred_at` is in the future."),
    "occurred_at_too_old": Problem(422, "`occurred_at` is further back than the pilot allows."),
    "occurred_at_before_enrolment": Problem(422, "`occurred_at` is before the enrolment."),
    "purchased_on_in_future": Problem(422, "`purchased_on` is after tomorrow."),
    "purchased_on_too_old": Problem(422, "`purchased_on` is further back than the pilot allows."),
    "purchased_on_before_enrolment": Problem(422, "`purchased_on` is before the enrolment."),
    "exceeds_family_cap": Problem(422, "More than the pilot's cap for the family's period."),
    "insufficient_funds": Problem(422, "A manager approving more than the family has available."),
    "exceeds_allocation": Problem(422, "A cut that would take the period's allocation below zero."),
    "exceeds_approved": Problem(422, "A purchase larger than what the request has left."),
    "exceeds_purchase": Problem(422, "A refund larger than what the purchase has left."),
    "unreadable_statement": Problem(422, "The statement file cannot be read."),
    "webhook_url_not_allowed": Problem(422, "The webhook URL is not one the ledger may call."),
    "conflict": Problem(409, "The command clashes with what is recorded."),
    "concurrent_modification": Problem(409, "Another writer went first: send it again."),
    "idempotency_key_reused": Problem(409, "The Idempotency-Key came before with another request."),
    "already_enrolled": Problem(409, "The family is enrolled already."),
    "already_exited": Problem(409, "The family has left already."),
    "already_requested": Problem(409, "A request with this id exists already."),
    "already_purchased": Problem(422, "The request has a purchase: it cannot be withdrawn."),
    "request_withdrawn": Problem(409, "The request was withdrawn."),
    "request_closed": Problem(409, "The request is closed."),
    "request_rejected": Problem(409, "The request was rejected."),
    "not_approved": Problem(422, "The request is not approved (yet): no purchase against it."),
    "not_pending": Problem(409, "The request is not awaiting a manager."),
    "seed_not_secret": Problem(
        409, "The pilot's randomisation seed is not secret: configure the pilot again."
    ),
    "nothing_to_reveal": Problem(409, "No secret seed to reveal."),
    "held_behind": Problem(
        409, "(`ledger deadletters`) A record waits behind an earlier one of its family."
    ),
    "unavailable": Problem(503, "The database cannot be reached just now."),
    "not_yet_consistent": Problem(503, "A view has not caught up with what the caller has seen."),
    "identity_provider_unavailable": Problem(
        503, "The identity provider's keys cannot be fetched just now."
    ),
    "purposes_unavailable": Problem(503, "Spending cannot give the purposes just now."),
    "key_custody": Problem(500, "A key-encryption key the ledger needs is not configured."),
    "internal_error": Problem(500, "A fault of the ledger's (logged with the request's id)."),
}
