"""deploy/prometheus: the alerting rules check and pass their unit tests with promtool
(Debian's prometheus package), every alert has a test that makes it fire, and the rules and
the Grafana dashboard ask only for metrics the services export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import generate_latest

from deploy.stack import ROOT
from shared.core.metrics import Metrics

PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = os.environ.get("LEDGER_PROMTOOL") or shutil.which("promtool")


def promtool(*arguments: str) -> str:
    if PROMTOOL is None:
        pytest.fail("promtool is missing: deploy/system-packages --tests installs prometheus")
    result = subprocess.run(
        [PROMTOOL, *arguments], cwd=PROMETHEUS, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def exported() -> set[str]:
    """Every series name a service can export, as Prometheus stores it."""
    metrics = Metrics("allocation")
    names = {"up"}
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def test_every_alert_has_a_test_that_makes_it_fire() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == fired
    # What the README asks operators to watch is alerted on.
    assert {
        "LedgerRelayLagging",
        "LedgerConsumerLagRising",
        "LedgerDeadLetter",
        "LedgerRecordsParked",
        "LedgerWebhookDeliveryDead",
        "LedgerNotReady",
        "LedgerDatabaseUnreachable",
        "LedgerKeyRotationUnfinished",
    } <= alerts


def _asked_for(text: str) -> set[str]:
    return set(re.findall(r"\b((?:ledger_[a-z_]+)|up)(?=[{\[\s)]|$)", text))


def test_the_rules_and_the_dashboard_ask_only_for_metrics_that_exist() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((PROMETHEUS / "dashboard.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    asked = set().union(*(_asked_for(expression) for expression in expressions))
    assert asked
    assert asked <= exported(), asked - exported()
    assert [panel["id"] for panel in dashboard["panels"]] == list(
        range(1, len(dashboard["panels"]) + 1)
    )


def test_labelled_counters_start_at_zero_and_the_info_names_version_and_commit() -> None:
    """A counter that first appears with its first increment is invisible to increase():
    the first dead letter of a consumer would raise no alert."""
    metrics = Metrics("reporting", version="0.1.0", revision="abc1234")
    metrics.consumes("reporting.projections", ["ledger.spending"])
    text = generate_latest(metrics.registry).decode()
    labels = 'consumer="reporting.projections",topic="ledger.spending"'
    for counter in ("events_consumed", "deadlettered", "parked"):
        assert f"ledger_{counter}_total{{{labels}}} 0.0" in text
    assert 'ledger_service_info{revision="abc1234",service="reporting",version="0.1.0"} 1.0' in text


def test_the_image_records_its_commit_for_the_service_info() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "ARG LEDGER_REVISION" in final
    assert "LEDGER_REVISION=${LEDGER_REVISION}" in final
