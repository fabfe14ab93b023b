"""Configuration from the environment (prefix ``LEDGER_``), one model for every service.

Nothing here names a service: a service's HTTP port is ``LEDGER_<SERVICE>_PORT`` (collected
into :attr:`Settings.ports` by :class:`_ServicePorts`), its default is in its registration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

__all__ = ["KafkaAccess", "Settings"]

_PORT_VARIABLE = re.compile(r"^LEDGER_([A-Z][A-Z0-9_]*)_PORT$")


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


@dataclass(frozen=True)
class KafkaAccess:
    """Where the broker is and who a client is to it (SASL/SCRAM-SHA-512 when a user is set),
    over TLS verified against ``ca_file`` when one is given."""

    bootstrap: str
    username: str | None = None
    password: str = field(default="", repr=False)
    ca_file: Path | None = None


class Settings(BaseSettings):
    """Everything a service, the CLI or the local stack needs to find its neighbours."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    # By service name, from LEDGER_<SERVICE>_PORT; a service missing here uses its default.
    ports: dict[str, int] = Field(default_factory=dict)

    pg_host: str = "127.0.0.1"
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_user: str = "ledger"
    pg_password: SecretStr = SecretStr("")
    # With a CA's certificate, connections use TLS and check the server's certificate and
    # name against it (libpq's sslmode=verify-full); unset, no TLS (the local stack).
    pg_ca_file: Annotated[Path | None, BeforeValidator(_empty_is_unset)] = None
    # Each service owns one database, named database_prefix + service name.
    database_prefix: str = "ledger_"
    pg_pool_min: int = Field(default=2, ge=1)
    pg_pool_max: int = Field(default=10, ge=1)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # The principal this process is to the broker (each service its own, the CLI "admin");
    # unset connects without authentication, which a broker of the ledger refuses.
    kafka_username: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    kafka_password: SecretStr = SecretStr("")
    # With a CA's certificate, SASL over TLS, the broker's certificate and name checked.
    kafka_ca_file: Annotated[Path | None, BeforeValidator(_empty_is_unset)] = None
    # Prefixed onto every topic name, so that a test run or a second stack can share a broker.
    topic_prefix: str = ""
    topic_partitions: int = Field(default=6, ge=1)
    # Copies of each partition the ledger creates: 1 on one broker, 3 on a cluster of three.
    topic_replicas: int = Field(default=1, ge=1)

    jwt_secret: SecretStr = SecretStr("")
    # Checked when set (iss, aud); empty is unset, as compose passes an unset variable.
    jwt_issuer: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    jwt_audience: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    jwt_max_lifetime_seconds: int = Field(default=86_400, gt=0)  # exp - iat at most
    # The council's OpenID Provider: when set, tokens are checked with its keys (from its
    # discovery document's jwks_uri), for this issuer and audience, and LEDGER_JWT_SECRET
    # (HS256, for the local stack and the tests) is not used.
    oidc_issuer: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    # In production a service refuses to start without the provider above, unless this says
    # that the local stack's kind of token is wanted there (trying the compose stack out).
    shared_secret_in_production: bool = False

    oidc_audience: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    oidc_algorithms: str = "RS256,ES256"
    # The provider's CA, when it is not one the system trusts.
    oidc_ca_file: Annotated[Path | None, BeforeValidator(_empty_is_unset)] = None
    # The key set is fetched again this often, and when a token names a key it lacks.
    oidc_jwks_refresh_seconds: float = Field(default=300.0, gt=0)
    # Where the provider's tokens carry the ledger's role (a dotted path: a string or a
    # list), pilot and team. LEDGER_OIDC_ROLES maps its values to the ledger's roles,
    # "ledger-admins=admin,ledger-finance=finance"; empty, they are the ledger's role names.
    oidc_role_claim: str = "roles"
    oidc_roles: str = ""
    oidc_pilot_claim: str = "pilot"
    oidc_team_claim: str = "team"
    # The claim that names a person as requests and decisions record them (requested_by must
    # be the caller's own for a social worker): `sub`, or e.g. `preferred_username`.
    oidc_subject_claim: str = "sub"

    # Keys that wrap families' sealing keys: "<id>=<base64url 32 bytes>,...", the first
    # current (shared.core.custody); kept outside every database and topic.
    key_encryption_keys: SecretStr = SecretStr("")
    # Or a file that lists them the same way (mode 600): services read it again when it
    # changes, so a new or retired KEK needs no restart (`ledger keys new-kek --add`,
    # `ledger keys retire`); set one of the two.
    key_encryption_keys_file: Annotated[Path | None, BeforeValidator(_empty_is_unset)] = None
    key_custody: str = "local"  # or a plug-in in the entry-point group ledger.key_custody
    # An OpenTelemetry collector's OTLP/HTTP endpoint (http://host:4318): traces go there.
    # Unset (the default), no spans are made.
    otlp_endpoint: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    # The commit the running code was built from (the image sets it), for ledger_service_info.
    revision: str = "unknown"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    # A library's line that repeats (aiokafka while Kafka is away) is written once this
    # often, the next saying how many were held back.
    log_repeat_seconds: float = Field(default=60.0, gt=0)

    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    # The relay is woken by NOTIFY; this poll only covers a lost notification.
    relay_poll_seconds: float = Field(default=0.5, gt=0)
    # A committed event older than this still not on Kafka: /readyz says the relay stalled.
    relay_stall_seconds: float = Field(default=30.0, gt=0)
    # A batch not on Kafka after this long is given up and sent again by a new producer.
    relay_publish_timeout_seconds: float = Field(default=60.0, gt=0)
    consumer_batch_size: int = Field(default=500, ge=1, le=10_000)
    shutdown_grace_seconds: float = Field(default=8.0, gt=0)
    http_body_timeout_seconds: float = Field(default=10.0, gt=0)  # then 408
    # A connection that has not sent a whole request's headers by then is closed.
    http_header_timeout_seconds: float = Field(default=15.0, gt=0)
    # Webhooks: a failing delivery is retried, waits doubling from the first retry up to
    # the longest, until the window has passed since its first try; then it is dead.
    webhook_retry_window_seconds: float = Field(default=86_400.0, gt=0)
    webhook_first_retry_seconds: float = Field(default=5.0, gt=0)
    webhook_max_backoff_seconds: float = Field(default=3_600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)  # per send
    webhook_poll_seconds: float = Field(default=0.5, gt=0)
    # Networks webhooks may reach besides the public internet (CIDRs, comma-separated):
    # loopback, private and link-local addresses are refused unless listed here.
    webhook_allowed_networks: str = ""
    # Where reporting asks spending what a family's requests were for (a statement the
    # worker chooses to show them on); unset: spending's port on this machine.
    spending_url: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    # How often allocation applies the pilots' retention policies.
    retention_interval_seconds: float = Field(default=3_600.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, and the services' ports from their variables."""
        return (
            init_settings,
            env_settings,
            _SecretFiles(settings_cls),
            _ServicePorts(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    def port_of(self, service: str, default: int) -> int:
        """The HTTP port a service listens on."""
        return self.ports.get(service, default)

    def with_port(self, service: str, port: int) -> Settings:
        """These settings with one service on another port."""
        return self.model_copy(update={"ports": {**self.ports, service: port}})

    @property
    def kafka(self) -> KafkaAccess:
        """What a Kafka client of this process connects with."""
        return KafkaAccess(
            self.kafka_bootstrap,
            self.kafka_username,
            self.kafka_password.get_secret_value(),
            self.kafka_ca_file,
        )

    def database_of(self, service: str) -> str:
        """The database a service owns."""
        return f"{self.database_prefix}{service}"

    def topic(self, name: str) -> str:
        """The broker's name for one of the ledger's topics."""
        return f"{self.topic_prefix}{name}"

    def as_environment(self) -> dict[str, str]:
        """The ``LEDGER_*`` variables that give another process these settings."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "ports":
                env.update(
                    {f"LEDGER_{service.upper()}_PORT": str(p) for service, p in value.items()}
                )
                continue
            if value is None:  # unset stays unset (not the string "None")
                continue
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"LEDGER_{name.upper()}"] = text
        return env


class _SecretFiles(PydanticBaseSettingsSource):
    """A secret from the file ``LEDGER_<NAME>_FILE`` names, as containers are given secrets
    (a trailing newline is not part of it); setting both it and ``LEDGER_<NAME>`` is an error,
    since one of the two would be silently ignored."""

    def get_field_value(self, _field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ answers for every field

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            # A secret with a file setting of its own (the KEKs, read again when it changes)
            # is read by what uses it.
            if info.annotation is not SecretStr or f"{name}_file" in self.settings_cls.model_fields:
                continue

            variable = f"LEDGER_{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if not path:
                continue
            if os.environ.get(variable):
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            try:
                values[name] = Path(path).read_text().removesuffix("\n")
            except OSError as error:
                raise SettingsError(f"{variable}_FILE: {error}") from error

        return values


class _ServicePorts(PydanticBaseSettingsSource):
    """``LEDGER_<SERVICE>_PORT`` variables, as ``ports`` (those of other settings excepted)."""

    def get_field_value(self, _field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ answers for every field

    def __call__(self) -> dict[str, Any]:
        fields = {f"LEDGER_{name.upper()}" for name in self.settings_cls.model_fields}
        ports = {
            match[1].lower(): int(value)
            for variable, value in os.environ.items()
            if (match := _PORT_VARIABLE.match(variable)) and variable not in fields
        }
        return {"ports": ports} if ports else {}
