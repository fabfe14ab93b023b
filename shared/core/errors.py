"""The one family of errors the services raise; the HTTP layer maps each to problem+json."""

from __future__ import annotations

from typing import ClassVar

from shared.core.problems import ProblemCode

__all__ = [
    "ConcurrencyError",
    "ConflictError",
    "DomainError",
    "EventTooLargeError",
    "ForbiddenError",
    "IdempotencyKeyReusedError",
    "LedgerError",
    "NotFoundError",
    "PolicyViolationError",
    "UnauthorizedError",
    "UnprocessableError",
]


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose: an HTTP status and a stable code."""

    status: ClassVar[int] = 500
    code: ClassVar[ProblemCode] = "internal_error"
    title: ClassVar[str] = "Internal error"
    retry_after: ClassVar[int | None] = None  # seconds, for a Retry-After header

    def __init__(self, detail: str, *, code: ProblemCode | None = None) -> None:

        super().__init__(detail)
        self.detail = detail
        # The caller may not do this, whatever the answer says (another team's family
        # answers as a missing one): a replay of an earlier answer is refused too.
        self.refuses_caller = False
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may refine its class's code


class DomainError(LedgerError):
    """A command the domain refuses; nothing is recorded."""

    status = 422
    code: ClassVar[ProblemCode] = "unprocessable"
    title = "The command cannot be carried out"


class UnprocessableError(DomainError):
    """A request that is well-formed but refers to something that cannot take it."""


class PolicyViolationError(DomainError):
    """A command the pilot's policy does not allow."""

    code: ClassVar[ProblemCode] = "policy_violation"
    title = "Policy violation"


class EventTooLargeError(UnprocessableError):
    """The event a command decided would be larger than the ledger publishes; nothing is kept."""

    code: ClassVar[ProblemCode] = "event_too_large"
    title = "Event too large"


class ConflictError(LedgerError):
    """The command clashes with what is already recorded (enrolled twice, already exited)."""

    status = 409
    code: ClassVar[ProblemCode] = "conflict"
    title = "Conflict"


class ConcurrencyError(ConflictError):
    """Another writer appended to the stream first; the command may be retried."""

    code: ClassVar[ProblemCode] = "concurrent_modification"
    title = "Concurrent modification"


class IdempotencyKeyReusedError(ConflictError):
    """The same Idempotency-Key arrived with a different request."""

    code: ClassVar[ProblemCode] = "idempotency_key_reused"
    title = "Idempotency key reused"


class NotFoundError(LedgerError):
    """The pilot, family or resource does not exist (or is not visible to the caller)."""

    status = 404
    code: ClassVar[ProblemCode] = "not_found"
    title = "Not found"


class UnauthorizedError(LedgerError):
    """No token, or one that cannot be trusted."""

    status = 401
    code: ClassVar[ProblemCode] = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(LedgerError):
    """A valid token whose role, pilot or team does not allow this."""

    status = 403
    code: ClassVar[ProblemCode] = "forbidden"
    title = "Forbidden"


class UnavailableError(LedgerError):
    """Something the answer needs is away for now (the identity provider, say): retry."""

    status = 503
    code: ClassVar[ProblemCode] = "unavailable"
    title = "Service unavailable"
    retry_after = 5
