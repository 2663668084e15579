"""The `storeroom` command: serve, worker, migrate, create-superuser, files verify."""

import asyncio
import copy
import logging
import os
import sys
from typing import Annotated, Any

import typer

from storeroom.core.config import ConfigurationError, Settings, get_settings

app = typer.Typer(help="Storeroom: a self-hostable backend service.", no_args_is_help=True)


def _settings_or_exit() -> Settings:
    try:
        settings = get_settings()
        settings.signing_key()
    except (ConfigurationError, ValueError) as exc:
        typer.secho(f"storeroom: configuration error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from exc
    return settings


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def serve_logging(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus Storeroom's own (the access log, the embedded
    worker, the sweeps): uvicorn applies it in every process it starts, which with `--workers N`
    are fresh interpreters where nothing configured here would reach."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["storeroom"] = {"format": LOG_FORMAT}
    config["handlers"]["storeroom"] = {
        "class": "logging.StreamHandler",
        "formatter": "storeroom",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["storeroom"], "level": level.upper()}
    # /readyz reads the migration state; Alembic would log its context (and its plugins) on
    # every probe.
    config["loggers"]["alembic"] = {"level": "WARNING"}
    return config


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    from storeroom.core.server import HeadLimitedHttpToolsProtocol

    settings = _settings_or_exit()
    if settings.metrics_enabled:
        # Before uvicorn imports the app: every process it starts, and the embedded job
        # worker, then writes its values where any of them can sum them for a scrape.
        from storeroom.metrics.processes import use_multiprocess_dir

        use_multiprocess_dir(settings.metrics_path / f"serve-{port}")
    if workers > 1 and settings.hashing_workers is None and not reload:
        # The cores are shared out: N processes each hashing on every core would run N times as
        # many argon2 hashes at once as there are cores (and hold their memory).
        share = max(1, (os.cpu_count() or 2) // workers)
        os.environ["STOREROOM_HASHING_WORKERS"] = str(share)  # the processes uvicorn starts
    uvicorn.run(
        "storeroom.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=None if reload else workers,
        reload=reload,
        access_log=False,  # storeroom writes its own structured access log
        log_level=settings.log_level.lower(),
        log_config=serve_logging(settings.log_level),
        proxy_headers=True,
        http=HeadLimitedHttpToolsProtocol,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, help="Jobs run at once (worker processes).")
    ] = 2,
    hostname: Annotated[
        str | None, typer.Option(help="Node name, e.g. jobs1@%h (default celery@<host>).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="With STOREROOM_METRICS_ENABLED: serve this worker's metrics (all its "
            "processes summed) for Prometheus on this port, at any path."
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface of the metrics port (no token: keep it private).")
    ] = "127.0.0.1",
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run background jobs (a Celery worker on STOREROOM_BROKER_URL)."""
    settings = _settings_or_exit()
    if settings.metrics_enabled:
        _worker_metrics(settings, metrics_host, metrics_port)
    from storeroom.jobs.celery_app import create_celery

    configure_logging(settings.log_level)
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--loglevel={settings.log_level.upper()}",
        # Jobs need none of the cluster chatter (and on the filesystem broker it is files).
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    create_celery(settings).worker_main(argv)


def _worker_metrics(settings: Settings, host: str, port: int | None) -> None:
    """The worker's prefork pool runs jobs in child processes, which write their values to
    files. The embedded worker writes into its `serve`'s directory (inherited), so the API's
    /metrics includes the jobs; a worker of its own has a directory per metrics port and
    serves the sum there."""
    from storeroom.metrics.processes import inherited_multiprocess_dir, use_multiprocess_dir

    if inherited_multiprocess_dir() is not None:
        return
    if port is None:
        typer.secho(
            "storeroom: STOREROOM_METRICS_ENABLED but no --metrics-port: this worker's metrics "
            "are not served",
            err=True,
            fg=typer.colors.YELLOW,
        )
        return
    use_multiprocess_dir(settings.metrics_path / f"worker-{port}")  # before prometheus_client
    from storeroom.metrics import service as metrics_service

    metrics_service.serve_on_port(host, port)


def _exit_with_parent(parent: int) -> None:
    """The embedded worker stops (warm shutdown) when the `serve` process that started it
    (`parent`, given by it) is gone, even if that one was killed, and even if it was killed
    before this process got this far (it is then already another process's child)."""
    import signal
    import threading
    import time

    if os.getppid() != parent:
        typer.echo("storeroom: the serve process that started this worker is gone", err=True)
        raise typer.Exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="storeroom-parent-watch", daemon=True).start()


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "heads",
) -> None:
    """Bring the database schema up to date (Alembic upgrade)."""
    from storeroom.core.migrations import upgrade
    from storeroom.core.paths import warn_if_shared

    settings = _settings_or_exit()
    configure_logging(settings.log_level)
    warn_if_shared(settings.data_dir)
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@app.command("create-superuser")
def create_superuser(
    email: Annotated[str, typer.Option(prompt=True, help="The superuser's email.")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters."
        ),
    ],
) -> None:
    """Create a superuser, or promote an existing account with that email."""
    from pydantic import ValidationError

    from storeroom.users import service as users_service
    from storeroom.users.schemas import UserCreate

    settings = _settings_or_exit()
    try:
        data = UserCreate(email=email, password=password)
    except ValidationError as exc:
        for error in exc.errors():
            typer.secho(f"{error['loc'][0]}: {error['msg']}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from exc

    async def run() -> str:
        from storeroom.core.db import create_engine, create_sessionmaker

        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                existing = await users_service.get_by_email(session, data.email)
                if existing is not None:
                    existing.is_superuser = True
                    existing.is_active = True
                    return f"promoted {existing.email} to superuser"
                user = await users_service.create(session, data, is_superuser=True)
                return f"created superuser {user.email}"
        finally:
            await engine.dispose()

    typer.echo(asyncio.run(run()))


files_app = typer.Typer(help="Stored files.", no_args_is_help=True)
app.add_typer(files_app, name="files")


@files_app.command("verify")
def verify_files(
    remove_unreferenced: Annotated[
        bool,
        typer.Option(
            help="Also delete bytes without rows that are older than an hour (for example "
            "the files of deleted accounts)."
        ),
    ] = False,
) -> None:
    """Report rows without bytes, bytes without rows, and size mismatches (exit 1 if any)."""
    from storeroom.files import service as files_service
    from storeroom.files.storage import create_storage

    settings = _settings_or_exit()

    async def run() -> tuple[files_service.StorageReport, int]:
        from storeroom.core.db import create_engine, create_sessionmaker

        engine = create_engine(settings)
        storage = create_storage(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                report = await files_service.verify(session, storage)
            removed = 0
            if remove_unreferenced:
                removed = await files_service.remove_unreferenced(storage, report)
            return report, removed
        finally:
            await storage.close()
            await engine.dispose()

    report, removed = asyncio.run(run())
    for missing in report.missing_content:
        typer.echo(
            f"row without bytes: file {missing.file_id} "
            f"(owner {missing.owner_id}, key {missing.storage_key})"
        )
    for mismatch in report.size_mismatches:
        typer.echo(
            f"size mismatch: file {mismatch.file_id} (key {mismatch.storage_key}): "
            f"row says {mismatch.expected} bytes, storage has {mismatch.actual}"
        )
    for blob in report.unreferenced:
        typer.echo(f"bytes without row: key {blob.key} ({blob.size} bytes)")
    typer.echo(
        f"{report.rows} rows, {report.blobs} blobs: {len(report.missing_content)} rows without "
        f"bytes, {len(report.unreferenced)} blobs without rows, "
        f"{len(report.size_mismatches)} size mismatches"
    )
    if remove_unreferenced:
        typer.echo(f"removed {removed} blobs without rows (older than an hour)")
    if not report.healthy:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()


@files_app.command("migrate")
def migrate_files(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The storage to copy into: s3://bucket/prefix (with STOREROOM_S3_* and the "
            "AWS credentials of the environment) or file:///path.",
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="The storage to copy from (default: STOREROOM_STORAGE_FALLBACK_URL if set, "
            "else STOREROOM_STORAGE_URL, i.e. <data dir>/files unless set).",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Files copied at once.")] = 4,
) -> None:
    """Copy every file's bytes into another storage under the same key, each verified by
    sha256 before it appears there. Resumable: files already there are skipped. To move
    without downtime: run it; set STOREROOM_STORAGE_URL to the target and
    STOREROOM_STORAGE_FALLBACK_URL to the old storage and restart; run it again (it copies
    the files uploaded meanwhile); then unset the fallback."""
    from storeroom.core.config import parse_storage_url
    from storeroom.files import service as files_service
    from storeroom.files.storage import create_storage

    settings = _settings_or_exit()
    try:
        target_location = parse_storage_url(to)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--to") from None
    try:
        source_location = (
            parse_storage_url(source)
            if source
            else settings.storage_fallback_location or settings.storage_location
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--from") from None
    if str(target_location) == str(source_location):
        raise typer.BadParameter(f"it is the source itself ({source_location})", param_hint="--to")

    async def run() -> files_service.MigrationReport:
        from storeroom.core.db import create_engine, create_sessionmaker

        engine = create_engine(settings)
        source_storage = create_storage(settings, source_location)
        target = create_storage(settings, target_location)
        try:
            async with create_sessionmaker(engine)() as session:
                return await files_service.migrate(
                    session, source_storage, target, concurrency=concurrency
                )
        finally:
            await source_storage.close()
            await target.close()
            await engine.dispose()

    report = asyncio.run(run())
    for key in report.missing:
        typer.echo(f"not copied, no bytes in {source_location}: key {key}")
    for key in report.corrupt:
        typer.echo(f"not copied, the bytes fail their sha256: key {key}")
    typer.echo(
        f"copied {report.copied} files ({report.copied_bytes} bytes) from {source_location} "
        f"to {target_location}; {report.already_there} were already there; "
        f"{len(report.missing)} missing, {len(report.corrupt)} corrupt"
    )
    if not report.complete:
        raise typer.Exit(code=1)
