"""Settings: every knob comes from a STOREROOM_* environment variable (or an optional .env)."""

import contextlib
import os
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from storeroom.core.paths import private_dir


class Environment(StrEnum):
    development = "development"
    production = "production"


class EmailBackend(StrEnum):
    outbox = "outbox"  # .eml files under <data dir>/outbox/, for development and tests
    smtp = "smtp"


class SmtpSecurity(StrEnum):
    none = "none"
    starttls = "starttls"
    ssl = "ssl"


class ConfigurationError(RuntimeError):
    """The settings cannot run a service; the message says what to set."""


_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
    "mysql+pymysql": "mysql+aiomysql",
    "mariadb+pymysql": "mysql+aiomysql",
}


def async_database_url(url: str) -> str:
    """Accept the URL people usually write (postgresql://, mysql://, sqlite:///) and pick the
    async driver Storeroom ships with."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(f"STOREROOM_DATABASE_URL is not a URL: {url!r}")
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"


def _read_key(key_file: Path) -> str:
    # fstat the open file, not the path: the mode checked is the mode of what is read.
    with key_file.open(encoding="utf-8") as handle:
        key_mode = os.fstat(handle.fileno()).st_mode & 0o777
        if key_mode & 0o077:
            raise ConfigurationError(
                f"{key_file} signs every token but other users can read or change it "
                f"(mode {key_mode:o}). Make it private: chmod 600 {key_file}"
            )
        key = handle.read().strip()
    if not key:
        raise ConfigurationError(
            f"{key_file} is empty. Delete it to have a new key generated (everyone is logged "
            "out), or set STOREROOM_SECRET_KEY."
        )
    return key


def _load_or_create_key(key_file: Path) -> str:
    """The key in `key_file`, generated on first use. The file is 0600 from its first byte
    (a temp file, written and synced, then hard-linked into place), and when processes start
    together the first link wins: every process reads that complete key, never an empty or
    half-written file, and never a key another process replaced."""
    try:
        return _read_key(key_file)
    except FileNotFoundError:
        pass
    private_dir(key_file.parent)
    temp_file = key_file.with_name(f".{key_file.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        # Unlike a rename, a link never replaces a published key: when another process
        # published first, this fails and everyone reads that one.
        with contextlib.suppress(FileExistsError):
            os.link(temp_file, key_file)
    finally:
        temp_file.unlink(missing_ok=True)
    return _read_key(key_file)


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """A parsed STOREROOM_STORAGE_URL: a directory (file) or a bucket and key prefix (s3)."""

    scheme: Literal["file", "s3"]
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""  # "" or ending in "/"

    def __str__(self) -> str:
        if self.scheme == "file":
            return str(self.path)
        return f"s3://{self.bucket}/{self.prefix}"


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_storage_url(url: str) -> StorageLocation:
    """file:///abs/path, file:relative/path, a plain path, or s3://bucket[/prefix]."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if url.startswith("file:"):
            return StorageLocation("file", path=Path(url.removeprefix("file:")))
        if url.startswith("s3:"):
            raise ValueError(f"storage URL {url!r}: write s3://bucket/prefix")
        return StorageLocation("file", path=Path(url))
    if scheme == "file":
        return StorageLocation("file", path=Path(unquote(urlsplit(url).path)))
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"storage URL {url!r}: {bucket!r} is not a valid bucket name")
        prefix = prefix.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError(f"storage URL {url!r}: the prefix has an empty or relative part")
        return StorageLocation("s3", bucket=bucket, prefix=f"{prefix}/" if prefix else "")
    raise ValueError(f"storage URL {url!r}: the scheme must be file:// or s3://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STOREROOM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Environment = Environment.development
    data_dir: Path = Path("data")
    database_url: str = ""
    secret_key: SecretStr | None = None
    access_token_minutes: int = Field(default=30, ge=1)
    refresh_token_days: int = Field(default=14, ge=1)
    # How long a web UI sign-in (its session cookie) lasts.
    session_days: int = Field(default=14, ge=1)
    public_url: str = "http://127.0.0.1:8000"
    email_backend: EmailBackend = EmailBackend.outbox
    email_from: str = "Storeroom <storeroom@localhost>"
    email_host: str = "localhost"
    email_port: int = Field(default=587, ge=1, le=65535)
    email_username: str = ""
    email_password: SecretStr | None = None
    email_security: SmtpSecurity = SmtpSecurity.starttls
    email_timeout_seconds: float = Field(default=10.0, gt=0)
    password_reset_minutes: int = Field(default=60, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: str = "INFO"
    database_pool_size: int = Field(default=20, ge=1)
    # Password-hashing processes per app process (argon2 is CPU-bound). Unset: one per core,
    # and `storeroom serve --workers N` shares the cores out among its N processes.
    hashing_workers: int | None = Field(default=None, ge=1)
    # Connections kept for single-statement reads (every authenticated request's own account,
    # item pages); requests beyond it wait for one, as they are short.
    database_reader_pool_size: int = Field(default=20, ge=1)
    # How long a request waits for a pooled connection before it answers 503 database_busy.
    database_pool_timeout_seconds: float = Field(default=30, gt=0)
    # A ping costs a round trip per checkout (bench/database_liveness.py: GET /users/me at 70-80 %
    # of the throughput). Connections the database closed, as a restart does, are replaced at
    # checkout without it (core/db.py); a ping also catches connections that die unseen, e.g.
    # dropped by a firewall or NAT that sends no reset.
    database_pre_ping: bool = False
    # Freeze the objects built at startup out of the cyclic garbage collector, and run it less
    # often (see main.py). Only for processes that build one app; a test run building hundreds
    # turns it off.
    gc_freeze: bool = True
    redis_url: str | None = None
    redis_key_prefix: str = "storeroom:"
    login_max_failures: int = Field(default=10, ge=1)
    login_failure_window_seconds: int = Field(default=300, ge=1)
    # Unauthenticated requests that create an account or send an email, per client IP (and,
    # for recovery, per address it names) within their window; beyond them 429.
    registration_max_per_ip: int = Field(default=20, ge=1)
    registration_window_seconds: int = Field(default=3600, ge=1)
    password_recovery_max_per_ip: int = Field(default=10, ge=1)
    password_recovery_max_per_email: int = Field(default=3, ge=1)
    password_recovery_window_seconds: int = Field(default=3600, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, ge=0)
    user_quota_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)
    file_sweep_interval_seconds: float = Field(default=900, gt=0)
    file_fsync: bool = True
    # Where file bytes live: file:///path (unset: <data dir>/files) or s3://bucket/prefix on any
    # S3-compatible store. Credentials come from the standard AWS variables or config files.
    storage_url: str = ""
    # While moving to a new storage (`storeroom files migrate`): a file not found in
    # STOREROOM_STORAGE_URL is read (and deleted) here, so nothing is missing meanwhile.
    storage_fallback_url: str = ""
    s3_endpoint_url: str | None = None  # MinIO, Ceph, R2, ...; unset for AWS itself
    s3_region: str | None = None
    # proxy: downloads stream through Storeroom; redirect (S3 only): a 307 to a presigned URL
    # valid for s3_presign_seconds.
    storage_downloads: Literal["proxy", "redirect"] = "proxy"
    s3_presign_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    # Parts of a multipart upload to the store (S3 allows 5 MiB to 5 GiB per part).
    s3_part_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    # The request line and headers of one request, as `storeroom serve` reads them: past either
    # limit the answer is 431 and the connection closes, before anything is buffered further.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=1)
    # On SIGTERM `storeroom serve` stops accepting connections and gives the requests in flight
    # this long to finish (uvicorn's timeout_graceful_shutdown); then it cancels what is left.
    shutdown_timeout_seconds: int = Field(default=30, ge=0)
    # Swagger UI's "persistAuthorization" keeps the credentials typed into /docs in the
    # browser's localStorage, where any script on this origin can read them.
    docs_persist_authorization: bool = False
    # How long the first response to an Idempotency-Key is kept and replayed to retries.
    idempotency_hours: int = Field(default=24, ge=1)
    # Background jobs. The broker carries "run job X" messages; the job rows are the truth.
    # filesystem:// is the embedded default (folders under <data dir>/broker/, one host);
    # amqp://... (RabbitMQ) or redis://... for workers on several hosts.
    broker_url: str = "filesystem://"
    # How often an idle worker looks for new messages on the filesystem broker.
    broker_polling_interval_seconds: float = Field(default=0.1, gt=0)
    # The queue jobs are sent to (deployments sharing one broker use different names).
    job_queue: str = Field(default="storeroom", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    # `storeroom serve` on the filesystem broker also runs one worker process.
    embedded_worker: bool = True
    # A worker holds a job for this long, renewing it while it runs; when a worker dies, its
    # jobs are sent again once their lease has run out.
    job_lease_seconds: float = Field(default=30, gt=0)
    # How often each worker looks for jobs whose lease ran out, and for finished jobs past
    # their retention.
    job_sweep_interval_seconds: float = Field(default=10, gt=0)
    # A job still queued after this long is sent again (its message may have been lost).
    job_requeue_seconds: float = Field(default=600, gt=0)
    # A job whose worker died this many times is failed instead of sent again.
    job_max_attempts: int = Field(default=3, ge=1)
    job_soft_time_limit_seconds: float = Field(default=3600, gt=0)
    job_retention_days: int = Field(default=30, ge=1)
    # Live events (GET /api/v1/events). Each user's log keeps the last `event_retention` events
    # and none older than `event_retention_hours`: a client reconnecting with an older
    # Last-Event-ID is told to refetch (a `reset` event).
    event_retention: int = Field(default=1000, ge=1)
    event_retention_hours: float = Field(default=24, gt=0)
    # Without Redis, each API process reads new events from the database this often (and at
    # once for the events it published itself).
    event_poll_interval_seconds: float = Field(default=0.05, gt=0)
    # A comment line this often keeps idle streams open through proxies.
    event_keepalive_seconds: float = Field(default=15, gt=0)
    # The `retry:` a stream tells clients to wait before reconnecting.
    event_retry_ms: int = Field(default=2000, ge=0)
    # Events held for one client that reads too slowly; past this it gets a `reset` and is
    # disconnected. A client that takes no bytes at all for event_send_timeout_seconds is cut.
    event_buffer_events: int = Field(default=1000, ge=1)
    event_send_timeout_seconds: float = Field(default=30, gt=0)
    # Prometheus metrics at GET /metrics, and the HTTP series (README "Operations").
    metrics_enabled: bool = False
    # When set, a scrape must send it as `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = None
    # Where the processes of `storeroom serve` (its --workers N and its embedded job worker),
    # or of one `storeroom worker` and its pool, write their values, summed at each scrape.
    # Emptied when the command starts. Unset: <data dir>/metrics.
    metrics_dir: Path | None = None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _no_null_origin(cls, value: list[str]) -> list[str]:
        if "null" in value:
            # Sandboxed frames, file:// pages and redirects all send "null": allowing it allows
            # them all.
            raise ValueError('"null" cannot be an allowed CORS origin')
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_database(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'storeroom.db'}"
        self.database_url = async_database_url(self.database_url)
        return self

    @model_validator(mode="after")
    def _check_storage(self) -> "Settings":
        location = self.storage_location
        if self.storage_downloads == "redirect" and location.scheme != "s3":
            raise ValueError("STOREROOM_STORAGE_DOWNLOADS=redirect needs an s3:// storage URL")
        fallback = self.storage_fallback_location
        if fallback is not None and str(fallback) == str(location):
            raise ValueError("STOREROOM_STORAGE_FALLBACK_URL is STOREROOM_STORAGE_URL itself")
        return self

    @property
    def storage_fallback_location(self) -> "StorageLocation | None":
        return parse_storage_url(self.storage_fallback_url) if self.storage_fallback_url else None

    @property
    def storage_location(self) -> "StorageLocation":
        if not self.storage_url:
            return StorageLocation("file", path=self.data_dir / "files")
        return parse_storage_url(self.storage_url)

    @property
    def secure_cookies(self) -> bool:
        """Cookies are marked Secure when users reach the service over HTTPS."""
        return self.public_url.lower().startswith("https://")

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def metrics_path(self) -> Path:
        return self.metrics_dir or self.data_dir / "metrics"

    @property
    def locks_dir(self) -> Path:
        """Lock files that elect one app process of several for housekeeping."""
        return self.data_dir / "locks"

    @property
    def has_embedded_broker(self) -> bool:
        return self.broker_url.partition("://")[0] == "filesystem"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def signing_key(self) -> str:
        """The JWT signing key. In development one is generated once and kept in the data
        directory; production refuses to run without STOREROOM_SECRET_KEY."""
        if self.secret_key is not None and self.secret_key.get_secret_value():
            key = self.secret_key.get_secret_value()
            if self.environment is Environment.production and len(key) < 32:
                raise ConfigurationError("STOREROOM_SECRET_KEY must be at least 32 characters.")
            return key
        if self.environment is Environment.production:
            raise ConfigurationError(
                "STOREROOM_SECRET_KEY is not set. Production needs a secret key of at least "
                '32 characters, e.g. python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        key = _load_or_create_key(self.data_dir / "secret_key")
        self.secret_key = SecretStr(key)
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
