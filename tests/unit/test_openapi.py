"""The OpenAPI documents list every answer a route gives (built from the routes, no I/O)."""

from __future__ import annotations

from typing import Any

from shared.web.openapi import openapi_document
from shared.web.registry import services


def documents() -> dict[str, dict[str, Any]]:
    return {
        definition.name: openapi_document(
            title=definition.name,
            version="test",
            description=definition.description,
            routes=definition.routes(),
        )
        for definition in services()
    }


def test_put_pilot_documents_both_of_its_successes() -> None:
    """201 when the pilot is created, 200 when a version is recorded or nothing changed."""
    put = documents()["allocation"]["paths"]["/pilots/{pilot_id}"]["put"]
    assert {"200", "201"} <= set(put["responses"])


def test_every_route_with_query_parameters_documents_422() -> None:
    """A bad query parameter (as_of=AAA, suppress_small_cells=maybe) is a documented 422."""
    checked = 0
    for document in documents().values():
        for operations in document["paths"].values():
            for operation in operations.values():
                if any(p["in"] == "query" for p in operation.get("parameters", [])):
                    assert "422" in operation["responses"], operation["operationId"]
                    checked += 1
    assert checked >= 3  # balance, uptake, approvals


def test_a_get_without_a_body_documents_no_body_errors() -> None:
    """413 and 415 are about bodies: a GET does not answer them."""
    get = documents()["reporting"]["paths"]["/pilots/{pilot_id}/families/{family_id}/balance"]
    assert not {"413", "415"} & set(get["get"]["responses"])


def test_reporting_documents_the_webhook_requests_it_sends() -> None:
    """OpenAPI 3.1's webhooks: the signed headers a subscriber must check, and the body."""
    definition = next(d for d in services() if d.name == "reporting")
    document = openapi_document(
        title="reporting",
        version="test",
        description=definition.description,
        routes=definition.routes(),
        webhooks=definition.webhooks,
    )
    post = document["webhooks"]["ledgerEvent"]["post"]
    assert {p["name"] for p in post["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert "application/cloudevents+json" in post["requestBody"]["content"]
    assert {"/pilots/{pilot_id}/webhooks", "/pilots/{pilot_id}/webhooks/{subscription_id}"} <= set(
        document["paths"]
    )
