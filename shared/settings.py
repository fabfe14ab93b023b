"""Configuration from the environment (prefix ``LEDGER_``), one model for every service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["SERVICE_NAMES", "ServiceName", "Settings"]

ServiceName = Literal["allocation", "spending", "approval", "reporting"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("allocation", "spending", "approval", "reporting")


class Settings(BaseSettings):
    """Everything a service, the CLI or the local stack needs to find its neighbours."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    allocation_port: int = Field(default=8081, ge=0, le=65535)
    spending_port: int = Field(default=8082, ge=0, le=65535)
    approval_port: int = Field(default=8083, ge=0, le=65535)
    reporting_port: int = Field(default=8084, ge=0, le=65535)

    pg_host: str = "127.0.0.1"
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_user: str = "ledger"
    pg_password: SecretStr = SecretStr("")
    # Each service owns one database, named database_prefix + service name.
    database_prefix: str = "ledger_"
    pg_pool_min: int = Field(default=2, ge=1)
    pg_pool_max: int = Field(default=10, ge=1)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Prefixed onto every topic name, so that a test run or a second stack can share a broker.
    topic_prefix: str = ""
    topic_partitions: int = Field(default=6, ge=1)

    jwt_secret: SecretStr = SecretStr("")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    # The relay is woken by NOTIFY; this poll only covers a lost notification.
    relay_poll_seconds: float = Field(default=0.5, gt=0)
    consumer_batch_size: int = Field(default=500, ge=1, le=10_000)
    shutdown_grace_seconds: float = Field(default=8.0, gt=0)

    def port_of(self, service: ServiceName) -> int:
        """The HTTP port a service listens on."""
        ports: dict[ServiceName, int] = {
            "allocation": self.allocation_port,
            "spending": self.spending_port,
            "approval": self.approval_port,
            "reporting": self.reporting_port,
        }
        return ports[service]

    def database_of(self, service: ServiceName) -> str:
        """The database a service owns."""
        return f"{self.database_prefix}{service}"

    def topic(self, name: str) -> str:
        """The broker's name for one of the ledger's topics."""
        return f"{self.topic_prefix}{name}"
