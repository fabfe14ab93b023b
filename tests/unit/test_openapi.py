"""The OpenAPI documents list every answer a route gives (built from the routes, no I/O)."""

from __future__ import annotations

import re
from typing import Any

from shared.core.problems import PROBLEMS
from shared.core.settings import Settings
from shared.web.registry import services
from shared.web.service import service_document, service_routes


def documents() -> dict[str, dict[str, Any]]:
    """Each service's document, as it serves it."""
    return {
        definition.name: service_document(definition, Settings(), service_routes(definition))
        for definition in services()
    }


def test_every_operation_has_a_readable_id_unique_across_the_services() -> None:
    """Generated clients name their calls by operationId: enrolFamily, not
    post_pilots_pilot_id_families. The operational endpoints each service has are named
    alike in each document."""
    seen: dict[str, str] = {}
    for service, document in documents().items():
        sent = document.get("webhooks", {})
        for operations in [*document["paths"].values(), *sent.values()]:
            for operation in operations.values():
                name = operation["operationId"]
                assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", name), name
                if "x-roles" in operation:
                    assert seen.setdefault(name, service) == service, name
    assert {"enrolFamily", "requestSpend", "approveSpendRequest", "getBalance"} <= set(seen)


def test_problem_codes_are_enumerated_and_servers_named() -> None:
    for service, document in documents().items():
        problem = document["components"]["schemas"]["Problem"]
        assert problem["properties"]["code"]["enum"] == list(PROBLEMS), service
        [server] = document["servers"]
        default = next(d for d in services() if d.name == service).default_port
        assert server["variables"]["port"]["default"] == str(Settings().port_of(service, default))


def test_files_and_lines_are_declared_as_what_they_are() -> None:
    """The trial dataset is bytes (a zip), not a string to parse; each line of a batch is a
    BatchLine; statements come as CSV or OFX text."""
    reporting, spending = documents()["reporting"], documents()["spending"]
    dataset = reporting["paths"]["/pilots/{pilot_id}/trial-dataset"]["get"]["responses"]["200"]
    assert dataset["content"]["application/zip"]["schema"]["format"] == "binary"
    batch = spending["paths"]["/pilots/{pilot_id}/batches"]["post"]
    lines = batch["requestBody"]["content"]["application/x-ndjson"]
    assert lines["schema"]["$ref"] == "#/components/schemas/BatchLine"
    assert "Each line" in lines["schema"]["description"]
    statement = spending["paths"]["/pilots/{pilot_id}/statements"]["post"]["requestBody"]
    assert set(statement["content"]) == {"text/csv", "application/x-ofx"}


def test_put_pilot_documents_both_of_its_successes() -> None:
    """201 when the pilot is created, 200 when a version is recorded or nothing changed."""
    put = documents()["allocation"]["paths"]["/pilots/{pilot_id}"]["put"]
    assert {"200", "201"} <= set(put["responses"])


def test_every_route_with_query_parameters_documents_422() -> None:
    """A bad query parameter (as_of=AAA, suppress_small_cells=maybe) is a documented 422."""
    checked = 0
    for document in documents().values():
        sent = document.get("webhooks", {})
        for operations in [*document["paths"].values(), *sent.values()]:
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
    document = documents()["reporting"]
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


def test_a_discriminator_is_required_in_every_variant() -> None:
    """EveryoneTreated's mode had a default, so the document said {} was one, which the
    service refuses (the variant is found by its mode) and generators warned of."""
    checked = 0
    for document in documents().values():
        schemas = document["components"]["schemas"]
        for schema in _all_schemas(schemas):
            if "discriminator" not in schema:
                continue
            name = schema["discriminator"]["propertyName"]
            for variant in schema.get("oneOf", []):
                target = schemas[variant["$ref"].rsplit("/", 1)[1]]
                assert name in target.get("required", []), variant
                checked += 1
    assert checked >= 2


def _all_schemas(node: Any) -> list[dict[str, Any]]:
    """Every schema object under ``node``."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _all_schemas(value)
    elif isinstance(node, list):
        for value in node:
            found += _all_schemas(value)
    return found
