"""Kafka away, as an operator would meet it: the four services as processes on a broker of
this test's own, which is killed while an event waits in allocation's outbox. Every signal
says so (the relay's lag grows, /readyz names Kafka and stays 200, aiokafka's repeated
lines are held back and counted), the alerts fire in promtool for the very series the
services export, and once Kafka is back all of it clears and the event is published.

And what a spend request gets meanwhile, whatever state spending's consumer is in: taken
(202) when spending's views hold the allocation version the caller names, and decided when
Kafka is back; refused with 503 ``not_yet_consistent`` and Retry-After when they cannot
(the caller saw an allocation Kafka has not carried yet), nothing recorded."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from deploy.stack import Kafka, unique_name
from shared.core.kafka import ensure_topics
from shared.web.registry import ledger_topics
from tests.conftest import Infrastructure
from tests.deploy.test_alerts import PROMETHEUS, promtool
from tests.e2e.processes import sample, service_processes
from tests.support import read_topic, wait_for


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
        return answer.status, await answer.json()


async def _post(url: str, token: str, body: dict[str, Any]) -> tuple[int, Any, str | None]:
    """Status, body and Retry-After of a POST."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as answer,
    ):
        return answer.status, await answer.json(), answer.headers.get("Retry-After")


def _enrolment(family: str) -> dict[str, str]:
    return {"family_id": family, "team": "t-1", "worker": "sw-1", "enrolled_on": "2026-01-05"}


def _spend(version: int) -> dict[str, Any]:
    return {
        "family_id": "fam-1",
        "amount_pence": 1_000,
        "category": "practical",
        "purpose": "school shoes",
        "requested_by": "sw-1",
        "family_involved": True,
        "allocation_version": version,
    }


async def test_a_kafka_outage_shows_in_every_signal_and_clears_when_it_returns(
    infra: Infrastructure, own_kafka: Kafka, token: Callable[..., str], tmp_path: Path
) -> None:
    settings = infra.settings(
        kafka_bootstrap=own_kafka.bootstrap,
        kafka_password=own_kafka.password,
        relay_stall_seconds=3.0,
        log_repeat_seconds=5.0,
    )
    await ensure_topics(settings, ledger_topics())
    admin = token("admin", "wigan", sub="finance-1")
    worker = token("social_worker", "wigan", sub="sw-1", team="t-1")
    async with service_processes(settings, tmp_path) as services:
        pilot = {
            "name": "W",
            "period_months": 12,
            "family_cap_pence": 100_000,
            "approval_tiers": [{"up_to_pence": 50_000, "approver": "auto"}],
            "categories": ["practical"],
        }
        async with aiohttp.ClientSession() as session:
            put = await session.put(
                f"{services.url('allocation')}/pilots/wigan",
                json=pilot,
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert put.status == 201, await put.text()
        allocation = services.url("allocation")
        requests = f"{services.url('spending')}/pilots/wigan/spend-requests"
        family = f"{allocation}/pilots/wigan/families/fam-1"
        assert (await _post(f"{allocation}/pilots/wigan/families", admin, _enrolment("fam-1")))[
            0
        ] == 201
        status, body, _ = await _post(f"{family}/allocations", admin, {"amount_pence": 50_000})
        assert status == 201, body
        known = body["stream_version"]
        status, body, _ = await _post(requests, worker, _spend(known))  # spending has it
        assert status == 202, body

        own_kafka.stop(grace=0)  # killed, as a broker's host going away
        created = await _post(f"{allocation}/pilots/wigan/families", admin, _enrolment("fam-away"))
        assert created[0] == 201  # recorded, waiting
        # Spending's views hold what the caller saw: taken, decided once Kafka is back.
        status, taken, _ = await _post(requests, worker, _spend(known))
        assert status == 202, taken
        # The caller has seen an allocation Kafka has not carried: refused, nothing recorded.
        status, body, _ = await _post(f"{family}/allocations", admin, {"amount_pence": 5_000})
        assert status == 201, body
        newer = body["stream_version"]
        status, refused, retry_after = await _post(requests, worker, _spend(newer))
        assert (status, refused["code"]) == (503, "not_yet_consistent"), refused
        assert retry_after is not None
        seen: dict[str, Any] = {}

        async def every_signal() -> bool:
            status, ready = await _get(f"{allocation}/readyz")
            seen["readyz"] = (status, ready)
            metrics = await services.metrics("allocation")
            seen["lag"] = sample(metrics, "ledger_relay_lag_seconds")
            return (
                status == 200
                and ready["status"] == "degraded"
                and {"kafka", "relay"} <= set(ready["failing"])
                and (seen["lag"] or 0) > 8
            )

        await wait_for(every_signal, timeout=60, interval=0.5)
        lag_then = seen["lag"]
        await asyncio.sleep(6)  # longer than log_repeat_seconds: repeats are counted
        await every_signal()
        assert seen["lag"] > lag_then  # the age of the oldest unpublished event, still rising
        lines = [
            line
            for name in ("allocation", "spending", "approval", "reporting")
            for line in services.log_lines(name)
        ]
        kafka_lines = [line for line in lines if str(line.get("logger", "")).startswith("aiokafka")]
        assert kafka_lines, "aiokafka said nothing while Kafka was away"
        assert any(line.get("held_back") for line in kafka_lines), kafka_lines[-5:]
        assert not [
            line
            for line in lines
            if line.get("level") == "error"
            and "GroupCoordinatorNotAvailable" in line.get("event", "")
        ]
        assert len(kafka_lines) < 200  # 4,000 to 9,000 a minute before they were held back
        _alerts_fire_for(await services.metrics("allocation"), "allocation:8080")

        own_kafka.start()

        async def cleared() -> bool:
            status, ready = await _get(f"{allocation}/readyz")
            metrics = await services.metrics("allocation")
            lag = sample(metrics, "ledger_relay_lag_seconds")
            return status == 200 and ready["status"] == "ready" and lag is not None and lag < 1

        await wait_for(cleared, timeout=90, interval=0.5)
        records = await read_topic(settings, "ledger.allocation")
        assert "fam-away" in {r.value.get("familyid") for r in records}

        async def decided() -> bool:
            url = f"{requests}/{taken['request_id']}"
            status, view = await _get(url, {"Authorization": f"Bearer {worker}"})
            return status == 200 and view["status"] == "approved"

        await wait_for(decided, timeout=30, interval=0.5)
        status, body, _ = await _post(requests, worker, _spend(newer))
        assert status == 202, body  # the same request, once spending has caught up


def _alerts_fire_for(exposition: str, instance: str) -> None:
    """promtool, on the series as Prometheus would store what the service exported: its
    relay lag growing as it was seen to (a second a second), and readiness check kafka at 0."""
    names = {match.group(1) for match in re.finditer(r"^(ledger_\w+)", exposition, re.MULTILINE)}
    assert {"ledger_relay_lag_seconds", "ledger_readiness_check"} <= names
    assert 'ledger_readiness_check{check="kafka"} 0.0' in exposition
    labels = f'instance="{instance}", job="ledger"'
    where = {"instance": instance, "job": "ledger"}
    case = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"ledger_relay_lag_seconds{{{labels}}}", "values": "0+60x10"},
                    {
                        "series": f'ledger_readiness_check{{{labels}, check="kafka"}}',
                        "values": "0x10",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "4m",
                        "alertname": "LedgerRelayLagging",
                        "exp_alerts": [
                            {
                                "exp_labels": {**where, "severity": "page"},
                                "exp_annotations": {
                                    "summary": f"{instance}: committed events wait 4m 0s to "
                                    "reach Kafka",
                                    "description": "The outbox relay is not publishing: Kafka "
                                    "down or refusing the service's principal.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "6m",
                        "alertname": "LedgerNotReady",
                        "exp_alerts": [
                            {
                                "exp_labels": {**where, "severity": "ticket", "check": "kafka"},
                                "exp_annotations": {
                                    "summary": f"{instance}: readiness check kafka failing",
                                    "description": "A relay, consumer or task of the service "
                                    "has not been healthy for 5 minutes.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    written = PROMETHEUS / f".outage-{unique_name()}.test.yml"
    written.write_text(yaml.safe_dump(case))
    try:
        assert "SUCCESS" in promtool("test", "rules", written.name)
    finally:
        written.unlink()
