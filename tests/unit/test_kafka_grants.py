"""The broker's permissions, made from the services' registrations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.spending import views
from shared.core.settings import Settings
from shared.web.registry import KAFKA_ADMIN, kafka_grants, service
from shared.web.service import ConsumerSpec, check_consumers_declared


def test_a_service_with_a_consumer_it_did_not_declare_does_not_start() -> None:
    """The ACLs come from ``reads``: a consumer of anything else would be refused by the
    broker at run time, so the service refuses at start, naming it."""
    spending = service("spending")
    declared = ConsumerSpec(views.CONSUMER, spending.reads, views.apply)
    check_consumers_declared(spending, [declared])
    with pytest.raises(ValueError, match=r"ledger\.spending"):
        check_consumers_declared(spending, [replace(declared, topics=("ledger.spending",))])
    with pytest.raises(ValueError, match=r"spending\.<name>"):
        check_consumers_declared(spending, [replace(declared, name="approval.views")])


def test_the_grants_name_topics_groups_and_ids_under_the_prefix() -> None:
    grants = kafka_grants(Settings(topic_prefix="p."))
    names = [name for g in grants for name in (*g.topics, *g.groups, *g.transactional_ids)]
    assert names
    assert all(name.startswith("p.") for name in names)
    writes = {g.principal: g.topics for g in grants if "Write" in g.operations}
    assert writes["spending"] == ("p.ledger.spending", "p.ledger.deadletter")
    assert writes["reporting"] == ("p.ledger.deadletter",)
    assert KAFKA_ADMIN not in writes
