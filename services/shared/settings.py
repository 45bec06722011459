"""The one settings object: DEALREG_* environment variables, or a mapping passed in by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_postgres(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in POSTGRES_SCHEMES  # type: ignore[arg-type]


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy needs the psycopg 3 driver named explicitly."""
    parts = urlsplit(url)
    if parts.scheme in POSTGRES_SCHEMES:
        return parts._replace(scheme="postgresql+psycopg").geturl()
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEALREG_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Folder for the SQLite files")
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL of the event store; SQLite in data_dir if unset"
    )
    read_database_url: str | None = Field(
        default=None,
        description="URL of the read models; defaults to database_url, else SQLite in data_dir",
    )
    environment: str = Field(default="development", pattern="^(development|production|test)$")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    projection_poll_seconds: float = Field(default=0.5, gt=0)
    projection_worker: Literal["process", "thread"] = Field(
        default="process",
        description="Embedded mode: follow the log in a process of its own, or in a thread",
    )
    freshness_wait_seconds: float = Field(
        default=5.0, ge=0, description="How long a read with min_position waits for projections"
    )
    aggregate_cache_size: int = Field(default=10_000, ge=0, description="0 turns the cache off")
    snapshot_interval: int = Field(
        default=100, ge=0,
        description="Snapshot an aggregate every this many versions; 0 turns snapshots off",
    )
    checkpoint_interval_seconds: float = Field(
        default=300.0, ge=0,
        description="A signed tree head is kept in the checkpoint history this often; in "
        "between, the newest head is extended in place (the tree follows the log within a "
        "second either way); 0 keeps every head",
    )
    tree_head_poll_seconds: float = Field(
        default=0.25, gt=0, le=0.9,
        description="How often the write service's follower looks for events other processes "
        "wrote; it is woken at once by its own writes",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="The Ed25519 key that signs tree heads: PEM (PKCS8) or base64 of its "
        "32-byte seed. Wins over signing_key_file",
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="File holding that key (PEM). Unset: tree-head-signing.pem in data_dir, "
        "created on first start with an SQLite store; on PostgreSQL the key must be given",
    )
    log_level: str = "INFO"

    # Abuse limits and exposure (README: "Abuse limits"). In production: metrics "key" (or
    # "off" with the scrape behind the proxy), docs "off" unless partners need /docs.
    auth_failures_per_minute: int = Field(
        default=20, ge=1, le=10_000,
        description="Failed authentications an address may make at once, and then per minute, "
        "before its requests are refused with 429 whatever key they carry",
    )
    auth_throttle_max_addresses: int = Field(
        default=50_000, ge=1, description="Addresses the throttle tracks at most (memory bound)",
    )
    client_address_header: str | None = Field(
        default=None, max_length=100,
        description="Header a trusted reverse proxy sets to the client's address (its last "
        "entry is used, e.g. X-Forwarded-For); unset, the TCP peer is the client. Set it only "
        "behind a proxy that overwrites the header, or any client can name its own address",
    )
    metrics: Literal["public", "key", "off"] = Field(
        default="public",
        description="/metrics open to all, for an auditor or admin key only, or not served",
    )
    docs: Literal["on", "off"] = Field(
        default="on", description="Serve /docs, /redoc and /openapi.json",
    )
    unbound_partner_keys: Literal["allow", "refuse"] = Field(
        default="allow",
        description="A partner key bound to no firm (made before keys carried firms): act for "
        "every firm, logging a warning per write, or be refused every write. Set 'refuse' once "
        "every partner key is bound (`dealreg keys bind NAME --firm CODE`)",
    )

    # Distributed mode: relay and projection service.
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="host:port[,host:port]")
    kafka_topic: str = Field(default="dealregistry.events.v1", min_length=1, max_length=200)
    kafka_dlq_topic: str | None = Field(
        default=None, description="Dead-letter topic; defaults to the topic name + '.dlq'"
    )
    kafka_group_id: str = Field(default="dealreg-projections", min_length=1)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    # How long the broker may hold a fetch for more data. kafka-python's 500 ms default
    # becomes the delay of every event on a quiet topic (tansu holds the fetch that long).
    kafka_fetch_max_wait_ms: int = Field(default=20, ge=0, le=10_000)
    relay_page_size: int = Field(default=1000, ge=1, le=100_000)
    relay_poll_seconds: float = Field(default=0.1, gt=0)
    relay_max_backoff_seconds: float = Field(default=10.0, gt=0)
    # While idle, the relay repeats its watermark this often: how soon a lost topic is seen.
    relay_heartbeat_seconds: float = Field(default=2.0, gt=0)

    def dead_letter_topic(self) -> str:
        return self.kafka_dlq_topic or f"{self.kafka_topic}.dlq"

    @field_validator("database_url", "read_database_url")
    @classmethod
    def _supported_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        scheme = urlsplit(value).scheme
        if scheme not in (*POSTGRES_SCHEMES, "sqlite"):
            raise ValueError(f"unsupported database URL scheme {scheme!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _event_store_is_postgres(cls, value: str | None) -> str | None:
        if value is not None and not is_postgres(value):
            raise ValueError("DEALREG_DATABASE_URL must be a PostgreSQL URL (unset means SQLite)")
        return value

    def event_store_env(self) -> dict[str, str]:
        """Environment for the eventsourcing library's native SQLite or PostgreSQL module."""
        # Recently used aggregates stay in memory and are fast-forwarded from the store on each
        # load, so a long-lived deal costs its new events, not its whole history; one not in
        # memory loads from its latest snapshot plus the events after it.
        loading = {"SNAPSHOT_INTERVAL": str(self.snapshot_interval)}
        if self.aggregate_cache_size:
            # The library reads a size of 0 as "unbounded": no size at all turns the cache off.
            loading["AGGREGATE_CACHE_MAXSIZE"] = str(self.aggregate_cache_size)
        if self.database_url is None:
            return {
                **loading,
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.data_dir / "events.db"),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        parts = urlsplit(self.database_url)
        return {
            **loading,
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/"),
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_POOL_SIZE": "10",
            "POSTGRES_MAX_OVERFLOW": "10",
        }

    def registry_tables_url(self) -> str:
        """Where the registry keeps its own tables (API keys): beside the events."""
        if self.database_url is not None:
            return sqlalchemy_url(self.database_url)
        return f"sqlite:///{self.data_dir / 'registry.db'}"

    def read_model_url(self) -> str:
        if self.read_database_url is not None:
            return sqlalchemy_url(self.read_database_url)
        if self.database_url is not None:
            return sqlalchemy_url(self.database_url)
        return f"sqlite:///{self.data_dir / 'read.db'}"

    def uses_sqlite_files(self) -> bool:
        return self.database_url is None or self.read_database_url is None


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    return Settings(**(overrides or {}))
