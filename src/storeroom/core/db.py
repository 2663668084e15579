"""The database room: engine, the per-request session, the declarative Base."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import pymysql
from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, TypeDecorator, event
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import (
    ConnectionPoolEntry,
    NullPool,
    Pool,
    PoolProxiedConnection,
    PoolResetState,
)

from storeroom.core.config import Settings
from storeroom.core.paths import private_sqlite_database, sqlite_file
from storeroom.core.sqlite import use_one_call_cursors

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps go in and come out as aware UTC, whatever the backend keeps
    (SQLite and MariaDB keep naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# SQLite reuses the largest rowid after a delete unless the table says AUTOINCREMENT; a token,
# key, link or job that names a deleted row must never come to name a new one.
NEVER_REUSE_IDS: dict[str, Any] = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# Errors that mean the database went away, beyond those SQLAlchemy already treats so.
# PostgreSQL: SQLSTATE class 08 (connection exception), 57P01/57P02 (terminated by an
# administrator's or a crash's shutdown), 57P03 (starting up or shutting down).
# MariaDB/MySQL: 1053 server shutdown in progress, 1927 connection killed, 2002/2003 cannot
# connect, 2006 gone away, 2013/2055 connection lost.
_POSTGRESQL_GONE = frozenset({"57P01", "57P02", "57P03"})
_MYSQL_GONE = frozenset({1053, 1927, 2002, 2003, 2006, 2013, 2055})


def database_went_away(error: BaseException) -> bool:
    """Whether a driver's error means the connection to the database is gone or cannot be
    made, as opposed to a problem with the statement."""
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _POSTGRESQL_GONE):
        return True
    code = error.args[0] if error.args else None
    return isinstance(code, int) and code in _MYSQL_GONE


def _flag_lost_database(context: ExceptionContext) -> None:
    """Mark every error that means "no database" as a disconnect: SQLAlchemy then throws the
    connection (and the rest of the pool) away instead of reusing it, and the exception says
    `connection_invalidated`, which the error mapping answers with 503 database_unavailable.
    With no connection in the context the error came from connecting (or from a pre-ping):
    whatever stops a connection from being made makes the database unavailable."""
    if context.connection is None or database_went_away(context.original_exception):
        context.is_disconnect = True


def _connect_failures_as_database_errors(
    dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any
) -> Any:
    """asyncpg lets a refused or timed-out connection attempt out as the socket's own OSError,
    which SQLAlchemy passes through untouched; raised as the driver's OperationalError it is
    handled like every other database error (aiomysql already does this itself)."""
    try:
        return dialect.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as exc:
        raise dialect.loaded_dbapi.OperationalError(
            f"cannot connect to the database: {exc}"
        ) from exc


def _asyncpg_closed(driver_connection: Any) -> bool:
    return bool(driver_connection.is_closed())


def _aiomysql_closed(driver_connection: Any) -> bool:
    reader = getattr(driver_connection, "_reader", None)  # aiomysql has no public flag
    return reader is None or reader.at_eof()


def _discard_connections_closed_by_server(closed: Any) -> Any:
    """A checkout listener: when the database restarted (or killed the session) while the
    connection sat in the pool, the event loop has already read the connection's end, so
    noticing costs no round trip. Raising DisconnectionError makes the pool open a fresh
    connection in its place, so the request never sees the dead one."""

    def check(
        _dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        if closed(record.driver_connection):
            raise DisconnectionError("the database closed this pooled connection")

    return check


_CLOSED_CHECKS = {"asyncpg": _asyncpg_closed, "aiomysql": _aiomysql_closed}

logger = logging.getLogger("storeroom.db")


def _roll_back_on_return(dialect: Dialect) -> Any:
    """A pool "reset" listener that does the pool's rollback-on-return itself (the pool is made
    with `pool_reset_on_return=None`). A connection is returned without its transaction having
    been rolled back by the Connection after a commit, so the pool sends a ROLLBACK; if the
    database went away between the COMMIT and that ROLLBACK (a restart under traffic), SQLAlchemy
    would log the driver's traceback at ERROR. The connection is thrown away either way; a lost
    database is a one-line warning here, like every other outage; other errors stay SQLAlchemy's
    to report."""

    def reset(dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState) -> None:
        if state.transaction_was_reset or not state.asyncio_safe:
            return
        try:
            dbapi_connection.rollback()
        except dialect.loaded_dbapi.Error as exc:
            if not (database_went_away(exc) or dialect.is_disconnect(exc, None, None)):
                raise
            logger.warning(
                "database connection lost while returning to the pool: %s: %s",
                type(exc).__name__,
                exc,
            )
            record.invalidate(exc)

    return reset


# Driver errors SQLAlchemy can let out unwrapped: with aiomysql, switching a connection to
# autocommit (the DbReader path) is a round trip made outside SQLAlchemy's error handling,
# which also leaves that connection checked out until the garbage collector returns it.
UNWRAPPED_DRIVER_ERRORS: tuple[type[Exception], ...] = (pymysql.err.Error,)


def create_engine(
    settings: Settings, *, pooled: bool = True, poolclass: type[Pool] | None = None
) -> AsyncEngine:
    """One pool per process for sessions (transactions), sized by `database_pool_size` on every
    backend, plus as many again under bursts. No request holds more than one of its connections
    at a time, so a burst larger than the pool queues for connections instead of deadlocking on
    them. `pooled=False` opens a connection per session and keeps none: for a short-lived event
    loop (a job in a worker process), whose connections must not outlive it. `poolclass`
    replaces the queue pool (with the metrics' metered one)."""
    pool: dict[str, Any] = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_pool_size,
        "pool_timeout": settings.database_pool_timeout_seconds,
        "pool_reset_on_return": None,  # see _roll_back_on_return
    }
    if poolclass is not None:
        pool["poolclass"] = poolclass
    if not pooled:
        pool = {"poolclass": NullPool, "pool_reset_on_return": None}
    engine = _engine(settings, pool, pooled=pooled)
    if not (settings.is_sqlite and not sqlite_file(settings.database_url)):
        # (an in-memory SQLite database keeps SQLAlchemy's own pool and its own reset)
        event.listen(engine.sync_engine.pool, "reset", _roll_back_on_return(engine.dialect))
    return engine


def create_reader(
    settings: Settings, engine: AsyncEngine, *, poolclass: type[Pool] | None = None
) -> AsyncEngine:
    """The engine for single-statement reads that need no transaction (`DbReader`): its own
    pool, whose connections are put in autocommit once, when they are opened. On PostgreSQL a
    read is then one round trip instead of BEGIN, SELECT, COMMIT; and unlike an autocommit view
    of the sessions' pool, no checkout switches a connection into autocommit and back (on
    MariaDB two round trips, on SQLite four calls into the connection's thread) and no checkin
    rolls back a transaction that cannot exist. Its statements are short, so it keeps a fixed
    number of connections and never opens and closes extra ones under a burst: requests queue
    for a connection instead (bench/throughput.py). An in-memory SQLite database lives in its
    one connection: there the reader is an autocommit view of `engine`."""
    if settings.is_sqlite and not sqlite_file(settings.database_url):
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    pool: dict[str, Any] = {
        "pool_size": settings.database_reader_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.database_pool_timeout_seconds,
        "pool_reset_on_return": None,
        "isolation_level": "AUTOCOMMIT",
        "skip_autocommit_rollback": True,
    }
    if poolclass is not None:
        pool["poolclass"] = poolclass
    return _engine(settings, pool, pooled=True)


def _engine(settings: Settings, pool: dict[str, Any], *, pooled: bool) -> AsyncEngine:
    url = settings.database_url
    if settings.is_sqlite:
        private_sqlite_database(url)
        # A file database gets a pool like any other (SQLAlchemy's own default is 5 + 10);
        # an in-memory one keeps SQLAlchemy's single shared connection.
        engine = create_async_engine(url, **(pool if sqlite_file(url) else {}))
        event.listen(engine.sync_engine, "connect", use_one_call_cursors)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        engine = create_async_engine(
            url, **pool, pool_pre_ping=settings.database_pre_ping, pool_recycle=3600
        )
        closed = _CLOSED_CHECKS.get(engine.dialect.driver)
        if closed is not None and pooled:
            event.listen(
                engine.sync_engine.pool, "checkout", _discard_connections_closed_by_server(closed)
            )
    event.listen(engine.sync_engine, "do_connect", _connect_failures_as_database_errors)
    event.listen(engine.sync_engine, "handle_error", _flag_lost_database)
    return engine


class StoreroomSession(Session):
    """Sessions that can run work after their transaction commits (see `after_commit`)."""


_PENDING = "storeroom.after_commit"
_READY = "storeroom.committed"


@event.listens_for(StoreroomSession, "after_commit")
def _transaction_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        session.info.setdefault(_READY, []).extend(pending)


@event.listens_for(StoreroomSession, "after_rollback")
def _transaction_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def create_sessionmaker(
    engine: AsyncEngine, *, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """`info` is given to every session (e.g. where its events go: see events/log.py)."""
    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        autoflush=False,
        sync_session_class=StoreroomSession,
        info=info or {},
    )


def after_commit(session: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run `callback` once the session's current transaction has committed through `commit`
    below (which every code path that commits such work uses); never if it rolls back."""
    session.info.setdefault(_PENDING, []).append(callback)


def awaiting_commit(session: AsyncSession) -> list[Callable[[], Awaitable[None]]]:
    """The callbacks registered in the session's current transaction."""
    pending: list[Callable[[], Awaitable[None]]] = session.info.get(_PENDING, [])
    return pending


async def commit(session: AsyncSession) -> None:
    await session.commit()
    for callback in session.info.pop(_READY, ()):
        await callback()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the endpoint returns, rolled back when it raises.
    Function scope makes the commit happen before the response is sent, so a client never sees
    success for a write that did not land."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            if session.in_transaction():  # a request that never touched the database skips it
                await commit(session)


DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_reader(request: Request) -> AsyncEngine:
    reader: AsyncEngine = request.app.state.reader
    return reader


DbReader = Annotated[AsyncEngine, Depends(get_reader)]
