"""Allocation's routes: parse, authorise, call the application, answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from services.allocation.handlers import Allocation
from services.allocation.schemas import (
    AdjustmentBody,
    AdjustmentResult,
    AdjustmentView,
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
    PilotConfigBody,
    PilotView,
    Recorded,
    RevealBody,
)
from shared.core.commands import CommandResult
from shared.core.types import CommandBody
from shared.web.auth import ROLES
from shared.web.http import (
    Caller,
    PathParams,
    Route,
    command_route,
    json_response,
    principal_of,
)

__all__ = ["ALLOCATION", "routes"]

ALLOCATION = web.AppKey("allocation", Allocation)

BodyT = TypeVar("BodyT", bound=CommandBody)
_FAMILY = "/pilots/{pilot_id}/families/{family_id}"
_WRITERS = frozenset({"case_system", "social_worker", "admin"})


async def get_pilot(request: web.Request) -> web.StreamResponse:
    return json_response(
        await request.app[ALLOCATION].pilot(PathParams(request.match_info).pilot_id)
    )


async def get_family(request: web.Request) -> web.StreamResponse:
    path = PathParams(request.match_info)
    family = await request.app[ALLOCATION].family(
        principal_of(request), path.pilot_id, path.family_id
    )
    return json_response(family)


async def get_adjustment(request: web.Request) -> web.StreamResponse:
    path = PathParams(request.match_info)
    adjustment = await request.app[ALLOCATION].adjustment(
        principal_of(request), path.pilot_id, path.family_id, path.uuid("adjustment_id")
    )
    return json_response(adjustment)


async def get_notes(request: web.Request) -> web.StreamResponse:
    path = PathParams(request.match_info)
    notes = await request.app[ALLOCATION].notes(
        principal_of(request), path.pilot_id, path.family_id
    )
    return json_response(notes)


def _on_family(
    method: Callable[[Allocation, Caller, str, str, BodyT], Awaitable[CommandResult]],
) -> Callable[[Allocation, Caller, PathParams, BodyT], Awaitable[CommandResult]]:
    """A family command of the application, run on the family the path names."""

    def run(
        app: Allocation, caller: Caller, path: PathParams, body: BodyT
    ) -> Awaitable[CommandResult]:
        return method(app, caller, path.pilot_id, path.family_id, body)

    return run


# A table with one entry per endpoint, not logic: it is as long as the API is wide.
def routes() -> list[Route]:
    """Every allocation endpoint of API.md."""
    tags = ("allocation",)
    return [
        command_route(
            "PUT",
            "/pilots/{pilot_id}",
            "Create a pilot or change its configuration",
            frozenset({"admin"}),
            operation_id="configurePilot",
            app=ALLOCATION,
            body=PilotConfigBody,
            run=lambda app, caller, path, body: app.configure_pilot(
                caller, path.pilot_id, body.config()
            ),
            response=PilotView,
            status=201,
            also=((200, "A new version recorded, or the configuration unchanged"),),
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
            operation_id="getPilot",
            response=PilotView,
            tags=tags,
        ),
        command_route(
            "POST",
            "/pilots/{pilot_id}/families",
            "Enrol a family",
            _WRITERS,
            operation_id="enrolFamily",
            app=ALLOCATION,
            body=EnrolmentBody,
            run=lambda app, caller, path, body: app.enrol(caller, path.pilot_id, body),
            response=EnrolmentResult,
            status=201,
            description="Randomised pilots assign treatment or control within the stratum (one "
            "of the pilot's strata; 422 unknown_stratum otherwise), from a seed the ledger "
            "keeps secret and the enrolment order; the arm is told once the enrolment is "
            "recorded, and never changes. 409 seed_not_secret while the pilot's seed is not "
            "secret (configure it again to draw one). Enrolling the same family twice is a 409.",
            tags=tags,
        ),
        command_route(
            "POST",
            "/pilots/{pilot_id}/randomisation/reveal",
            "Reveal the randomisation seeds when the trial closes",
            frozenset({"admin"}),
            operation_id="revealRandomisation",
            app=ALLOCATION,
            body=RevealBody,
            run=lambda app, caller, path, body: app.reveal(caller, path.pilot_id, body),
            response=PilotView,
            description="Makes every seed the pilot randomised with public "
            "(pilot.randomisation_revealed), so that anyone can check each against the "
            "commitment published with it and recompute every assignment (ledger audit "
            "randomisation). From then on no family is randomised with them: configuring "
            "the pilot again draws a new secret seed. 409 nothing_to_reveal.",
            tags=tags,
        ),
        Route(
            "GET",
            _FAMILY,
            get_family,
            "A family's state",
            ROLES,
            operation_id="getFamily",
            response=FamilyView,
            description="Social workers and managers see their own team's families only: another "
            "team's answers 404, as a family that does not exist.",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_FAMILY}/allocations",
            "Allocate money for a period",
            frozenset({"admin"}),
            operation_id="allocateBudget",
            app=ALLOCATION,
            body=AllocationBody,
            run=_on_family(Allocation.allocate),
            response=AllocationResult,
            status=201,
            description="Periods start on the enrolment date and run back to back, each as "
            "long as the pilot's period_months when it starts (a change applies from each "
            "family's next period); the current period unless period_start names another. 422 "
            "exceeds_family_cap above the pilot's cap for the period.",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_FAMILY}/adjustments",
            "Adjust a period's allocation",
            frozenset({"admin"}),
            operation_id="adjustAllocation",
            app=ALLOCATION,
            body=AdjustmentBody,
            run=_on_family(Allocation.adjust),
            response=AdjustmentResult,
            status=201,
            also=((202, "A cut, recorded: approval decides whether the balance covers it"),),
            description="A positive delta_pence tops the period up at once (201; 422 "
            "exceeds_family_cap above the pilot's cap). A negative one is a cut: recorded as "
            "pending (202), then accepted by approval only if the period's available balance "
            "(allocated less held and spent) covers it, in the same transaction that guards "
            "holds, else refused; follow it at GET .../adjustments/{adjustment_id}, as a spend "
            "request is followed. 422 exceeds_allocation for a cut larger than the period's "
            "whole allocation.",
            tags=tags,
        ),
        Route(
            "GET",
            f"{_FAMILY}/adjustments/{{adjustment_id}}",
            get_adjustment,
            "Where an adjustment stands",
            ROLES,
            operation_id="getAdjustment",
            response=AdjustmentView,
            description="A cut is pending until approval decides it: accepted (the period's "
            "allocation is lower) or refused (what is held and spent leaves less available).",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_FAMILY}/exit",
            "The family leaves the pilot",
            _WRITERS,
            operation_id="exitFamily",
            app=ALLOCATION,
            body=ExitBody,
            run=_on_family(Allocation.exit),
            response=ExitResult,
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_FAMILY}/disclosures",
            "The family was told what their budget is",
            frozenset({"case_system", "social_worker"}),
            operation_id="recordDisclosure",
            app=ALLOCATION,
            body=DisclosureBody,
            run=_on_family(Allocation.disclose),
            response=Recorded,
            status=201,
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_FAMILY}/erasure",
            "Erase the family's free text (crypto-shredding)",
            frozenset({"admin"}),
            operation_id="eraseFamilyText",
            app=ALLOCATION,
            body=ErasureBody,
            run=_on_family(Allocation.erase),
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
            operation_id="getFamilyNotes",
            response=NotesView,
            description="Notes and reasons are stored sealed; this opens them for the roles that "
            "write them (workers and managers: own team). After an erasure each reads [erased].",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_FAMILY}/outcomes",
            "Record an outcome for evaluation",
            _WRITERS,
            operation_id="recordOutcome",
            app=ALLOCATION,
            body=OutcomeBody,
            run=_on_family(Allocation.record_outcome),
            response=Recorded,
            status=201,
            tags=tags,
        ),
    ]
