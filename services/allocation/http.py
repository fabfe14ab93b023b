"""Allocation's routes: parse, authorise, call the application, answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from services.allocation.handlers import Allocation
from services.allocation.pilots import PilotConfig
from services.allocation.schemas import (
    AdjustmentBody,
    AdjustmentResult,
    AllocationBody,
    AllocationResult,
    DisclosureBody,
    EnrolmentBody,
    EnrolmentResult,
    ErasureBody,
    ErasureResult,
    ExitBody,
    ExitResult,
    FamilyView,
    NotesView,
    OutcomeBody,
    PilotView,
    Recorded,
)
from shared.auth import ROLES
from shared.commands import Caller, CommandResult
from shared.http import (
    Handler,
    Route,
    caller_of,
    command_response,
    json_response,
    parse_body,
    principal_of,
)
from shared.types import CommandBody

__all__ = ["ALLOCATION", "routes"]

ALLOCATION = web.AppKey("allocation", Allocation)
BodyT = TypeVar("BodyT", bound=CommandBody)

_FAMILY = "/pilots/{pilot_id}/families/{family_id}"
_WRITERS = frozenset({"case_system", "social_worker", "admin"})


FamilyMethod = Callable[[Allocation, Caller, str, str, BodyT], Awaitable[CommandResult]]


def _family_command(body_model: type[BodyT], method: FamilyMethod[BodyT]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await parse_body(request, body_model)
        caller = caller_of(request, body.occurred_at)
        result = await method(request.app[ALLOCATION], caller, *_ids(request), body)
        return command_response(request, result)

    return handler


def _ids(request: web.Request) -> tuple[str, str]:
    return request.match_info["pilot_id"], request.match_info["family_id"]


async def put_pilot(request: web.Request) -> web.StreamResponse:
    config = await parse_body(request, PilotConfig)
    result = await request.app[ALLOCATION].configure_pilot(
        caller_of(request), request.match_info["pilot_id"], config
    )
    return command_response(request, result)


async def get_pilot(request: web.Request) -> web.StreamResponse:
    return json_response(await request.app[ALLOCATION].pilot(request.match_info["pilot_id"]))


async def post_family(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, EnrolmentBody)
    result = await request.app[ALLOCATION].enrol(
        caller_of(request, body.occurred_at), request.match_info["pilot_id"], body
    )
    return command_response(request, result)


async def get_family(request: web.Request) -> web.StreamResponse:
    return json_response(
        await request.app[ALLOCATION].family(principal_of(request), *_ids(request))
    )


async def get_notes(request: web.Request) -> web.StreamResponse:
    return json_response(await request.app[ALLOCATION].notes(principal_of(request), *_ids(request)))


post_allocation = _family_command(AllocationBody, Allocation.allocate)
post_adjustment = _family_command(AdjustmentBody, Allocation.adjust)
post_exit = _family_command(ExitBody, Allocation.exit)
post_disclosure = _family_command(DisclosureBody, Allocation.disclose)
post_erasure = _family_command(ErasureBody, Allocation.erase)
post_outcome = _family_command(OutcomeBody, Allocation.record_outcome)


def routes() -> list[Route]:
    """Every allocation endpoint of API.md."""
    tags = ("allocation",)
    return [
        Route(
            "PUT",
            "/pilots/{pilot_id}",
            put_pilot,
            "Create a pilot or change its configuration",
            frozenset({"admin"}),
            body=PilotConfig,
            response=PilotView,
            status=201,
            description="201 when the pilot is created, 200 when a new version is recorded "
            "(or the configuration is unchanged). Requests are judged by the version in force "
            "when they were made.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}",
            get_pilot,
            "The pilot's configuration in force",
            ROLES,
            response=PilotView,
            tags=tags,
        ),
        Route(
            "POST",
            "/pilots/{pilot_id}/families",
            post_family,
            "Enrol a family",
            _WRITERS,
            body=EnrolmentBody,
            response=EnrolmentResult,
            status=201,
            description="Randomised pilots assign treatment or control by permuted blocks "
            "within the stratum, reproducibly from the seed and enrolment order; the arm never "
            "changes. Enrolling the same family twice is a 409.",
            tags=tags,
        ),
        Route(
            "GET",
            _FAMILY,
            get_family,
            "A family's state",
            ROLES,
            response=FamilyView,
            description="Social workers and managers see their own team's families only.",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_FAMILY}/allocations",
            post_allocation,
            "Allocate money for a period",
            frozenset({"admin"}),
            body=AllocationBody,
            response=AllocationResult,
            status=201,
            description="Periods start on the enrolment date and run period_months; the "
            "current period unless period_start names another. 422 exceeds_family_cap above "
            "the pilot's cap for the period.",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_FAMILY}/adjustments",
            post_adjustment,
            "Adjust a period's allocation",
            frozenset({"admin"}),
            body=AdjustmentBody,
            response=AdjustmentResult,
            status=201,
            tags=tags,
        ),
        Route(
            "POST",
            f"{_FAMILY}/exit",
            post_exit,
            "The family leaves the pilot",
            _WRITERS,
            body=ExitBody,
            response=ExitResult,
            tags=tags,
        ),
        Route(
            "POST",
            f"{_FAMILY}/disclosures",
            post_disclosure,
            "The family was told what their budget is",
            frozenset({"case_system", "social_worker"}),
            body=DisclosureBody,
            response=Recorded,
            status=201,
            tags=tags,
        ),
        Route(
            "POST",
            f"{_FAMILY}/erasure",
            post_erasure,
            "Erase the family's free text (crypto-shredding)",
            frozenset({"admin"}),
            body=ErasureBody,
            response=ErasureResult,
            description="Deletes the keys that seal the family's notes and reasons, and records "
            "family.personal_data_erased. Amounts, events and hash chains are unchanged; the "
            "text can no longer be read anywhere, Kafka included.",
            tags=tags,
        ),
        Route(
            "GET",
            f"{_FAMILY}/notes",
            get_notes,
            "The family's free text, opened",
            frozenset({"admin", "case_system", "social_worker", "manager"}),
            response=NotesView,
            description="Notes and reasons are stored sealed; this opens them for the roles that "
            "write them (workers and managers: own team). After an erasure each reads [erased].",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_FAMILY}/outcomes",
            post_outcome,
            "Record an outcome for evaluation",
            _WRITERS,
            body=OutcomeBody,
            response=Recorded,
            status=201,
            tags=tags,
        ),
    ]
