"""Settings as containers give them: secrets in files, TLS to PostgreSQL and Kafka."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic_settings import SettingsError

from shared.core.db import dsn
from shared.core.kafka import connection
from shared.core.settings import Settings


def test_a_secret_is_read_from_the_file_its_file_variable_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Compose gives secrets as files; the trailing newline an editor adds is not part of
    the secret."""
    (tmp_path / "db").write_text("pg-secret\n")
    (tmp_path / "kafka").write_text("kafka-secret")
    monkeypatch.setenv("LEDGER_PG_PASSWORD_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("LEDGER_KAFKA_PASSWORD_FILE", str(tmp_path / "kafka"))
    settings = Settings()
    assert settings.pg_password.get_secret_value() == "pg-secret"
    assert settings.kafka.password == "kafka-secret"


def test_a_secret_given_twice_or_in_a_missing_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "jwt").write_text("j" * 40)
    monkeypatch.setenv("LEDGER_JWT_SECRET_FILE", str(tmp_path / "jwt"))
    monkeypatch.setenv("LEDGER_JWT_SECRET", "k" * 40)
    with pytest.raises(ValueError, match="LEDGER_JWT_SECRET or LEDGER_JWT_SECRET_FILE"):
        Settings()
    monkeypatch.delenv("LEDGER_JWT_SECRET")
    monkeypatch.setenv("LEDGER_JWT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="LEDGER_JWT_SECRET_FILE"):
        Settings()


def test_the_key_encryption_keys_file_keeps_its_own_meaning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """LEDGER_KEY_ENCRYPTION_KEYS_FILE names a file the services read again when it
    changes; it is not read once into LEDGER_KEY_ENCRYPTION_KEYS."""
    (tmp_path / "keks").write_text("k-1=abc\n")
    monkeypatch.setenv("LEDGER_KEY_ENCRYPTION_KEYS_FILE", str(tmp_path / "keks"))
    settings = Settings()
    assert settings.key_encryption_keys_file == tmp_path / "keks"
    assert settings.key_encryption_keys.get_secret_value() == ""


def test_with_a_ca_postgres_is_reached_over_tls_that_checks_the_server_and_its_name() -> None:
    plain = Settings(pg_user="u")
    assert urlsplit(dsn(plain, "ledger_spending")).query == ""
    checked = Settings(pg_user="u", pg_ca_file=Path("/run/secrets/ca_cert"))
    query = parse_qs(urlsplit(dsn(checked, "ledger_spending")).query)
    assert query == {"sslmode": ["verify-full"], "sslrootcert": ["/run/secrets/ca_cert"]}


def test_with_a_ca_kafka_is_reached_over_sasl_ssl_that_checks_the_broker_and_its_name(
    tmp_path: Path,
) -> None:
    # Any certificate will do as a CA for building the context: the system's own bundle.
    ca = tmp_path / "ca.pem"
    ca.write_text(Path(ssl.get_default_verify_paths().openssl_cafile).read_text())
    plain = connection(Settings(kafka_username="spending").kafka)
    assert plain["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_context" not in plain
    options = connection(Settings(kafka_username="spending", kafka_ca_file=ca).kafka)
    assert options["security_protocol"] == "SASL_SSL"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
