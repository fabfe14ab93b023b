"""What a family's spend requests were for, asked of spending, which alone can open them.

Purposes are sealed under spending's keys (erasable there, and only there), so reporting never
holds them. A statement the worker chooses to show them on asks spending's
``GET /pilots/{p}/families/{f}/purposes`` with the caller's own token: spending judges the
caller again, and nothing it answers is kept here. This is the one question a service asks
another over HTTP; every fact still travels by the topics.
"""

from __future__ import annotations

from urllib.parse import quote
from uuid import UUID

import aiohttp

from shared.core.errors import LedgerError

__all__ = ["PurposesUnavailableError", "SpendingPurposes"]


class PurposesUnavailableError(LedgerError):
    """Spending could not give the purposes just now; the statement without them still can."""

    status = 503
    code = "purposes_unavailable"
    title = "Purposes unavailable"
    retry_after = 2


class SpendingPurposes:
    """Spending's purposes endpoint, at ``base_url``."""

    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def of_family(self, pilot_id: str, family_id: str, authorization: str) -> dict[UUID, str]:
        """Each of the family's requests and what it was for (``[erased]`` after erasure);
        none when spending has not seen the family."""
        url = f"{self._base_url}/pilots/{quote(pilot_id, safe='')}/families/"
        url += f"{quote(family_id, safe='')}/purposes"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(url, headers={"Authorization": authorization}) as response,
            ):
                if response.status == 404:  # spending has not seen the family yet
                    return {}
                if response.status != 200:
                    raise PurposesUnavailableError(
                        f"spending answered {response.status} when asked what the family's "
                        "requests were for; retry, or show the statement without them"
                    )
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise PurposesUnavailableError(
                "spending cannot be reached to say what the family's requests were for; "
                "retry, or show the statement without them"
            ) from error
        return {UUID(item["request_id"]): item["purpose"] for item in body["purposes"]}
