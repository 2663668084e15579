"""Events: the log. Every event is appended to its owner's log once its change commits, and read
back from it twice: by each API process, which tails the whole log to fan new events out to
its streams, and by a reconnecting client, which replays what it missed.

Two back ends, chosen once from the settings (`create_event_log`); callers never branch on it:

- `DatabaseEventLog` (the embedded default): the `events` table, written in the same
  transaction as the change itself, so an event exists exactly when its change committed.
  Each API process reads new rows every `event_poll_interval_seconds`, and at once after it
  committed events itself. Ids are 1, 2, 3, ... per user.
- `RedisEventLog` (with STOREROOM_REDIS_URL): a capped Redis Stream per user is the log, and one
  shared stream carries every event to every API process. Events are sent once their
  transaction has committed. Ids are the user stream's entry ids ("1733140000000-0").
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storeroom.core.config import Settings
from storeroom.core.db import after_commit, awaiting_commit, utcnow
from storeroom.events.models import Event, EventCounter

logger = logging.getLogger("storeroom.events")

# What a session's `info` names its event log by (see create_sessionmaker).
SESSION_KEY = "storeroom.event_log"

Order = tuple[int, int]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One event as the log hands it out. `order` compares ids of one user's log."""

    owner_id: int
    id: str
    order: Order
    type: str
    data: str  # the resource, JSON
    created_at: str  # ISO 8601

    def frame(self) -> bytes:
        """The event as a stream sends it: built once, the same bytes for every client."""
        return encode(self.type, self.data, self.created_at, event_id=self.id)


def encode(type_: str, data: str, created_at: str, *, event_id: str | None = None) -> bytes:
    envelope = (
        f'{{"id":{json.dumps(event_id)},"type":"{type_}",'
        f'"created_at":"{created_at}","data":{data}}}'
    )
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {type_}\ndata: {envelope}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Replay:
    """What a client connecting with (or without) a Last-Event-ID is owed before live events:
    `events` after its id, or `reset` when they are no longer all in the log (or the id is not
    one of this user's). `latest` is the newest event in the log now: live events start after
    it, and a reset carries its id."""

    events: Sequence[LoggedEvent]
    reset: bool
    latest: Order
    latest_id: str | None


Deliver = Callable[[Sequence[LoggedEvent]], None]


class EventLog(Protocol):
    async def append(
        self, session: AsyncSession, owner_id: int, type_: str, data: str, created_at: datetime
    ) -> None:
        """Log an event of the change being made in `session`: it reaches the log if, and
        once, the session's transaction commits (through core.db.commit)."""

    async def replay(self, owner_id: int, after: str | None) -> Replay: ...

    async def tail(self, deliver: Deliver, ready: Callable[[], None]) -> None:
        """Hand every event appended from now on, by any process, to `deliver`, in log order,
        until cancelled or stopped; call `ready` once "from now on" is fixed (every event
        committed after that call is delivered)."""

    def stop(self) -> None:
        """Ask `tail` to return soon (the app is stopping): cancelled mid-read, a database
        connection could be left neither returned nor closed."""

    async def close(self) -> None: ...


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).partition(chr(10))[0]}"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- the database ---------------------------------------------------------------------------


# Ids the tailer has passed but not seen: a transaction that took the id may still commit
# (PostgreSQL and MariaDB hand ids out before commit, in no commit order). After this long the
# id is taken for one that never commits (a rollback).
_GAP_SECONDS = 10.0
_MAX_GAPS = 10_000
_TAIL_BATCH = 1000
# The count limit is enforced every this many events of a user (a cheap indexed delete).
_TRIM_EVERY = 64
_AGE_SWEEP_SECONDS = 60.0


class DatabaseEventLog:
    def __init__(
        self,
        *,
        retention: int = 1000,
        retention_hours: float = 24,
        poll_interval_seconds: float = 0.05,
        reader: AsyncEngine | None = None,
    ) -> None:
        self._reader = reader
        self._retention = retention
        self._max_age = timedelta(hours=retention_hours)
        self._poll_interval = poll_interval_seconds
        self._wakeup = asyncio.Event()
        self._stopping = False

    async def append(
        self, session: AsyncSession, owner_id: int, type_: str, data: str, created_at: datetime
    ) -> None:
        seq = await _next_seq(session, owner_id)
        await session.execute(
            insert(Event).values(
                owner_id=owner_id, seq=seq, type=type_, payload=data, created_at=created_at
            )
        )
        if seq % _TRIM_EVERY == 0:
            await session.execute(
                delete(Event).where(Event.owner_id == owner_id, Event.seq <= seq - self._retention)
            )
        if self._committed not in awaiting_commit(session):
            after_commit(session, self._committed)

    async def _committed(self) -> None:
        self._wakeup.set()  # this process's streams get it without waiting for the next poll

    def _engine(self) -> AsyncEngine:
        if self._reader is None:
            raise RuntimeError("this event log has no reader: it can append, not read")
        return self._reader

    async def replay(self, owner_id: int, after: str | None) -> Replay:
        async with self._engine().connect() as connection:
            latest = (
                await connection.scalar(
                    select(EventCounter.last_seq).where(EventCounter.owner_id == owner_id)
                )
                or 0
            )
            latest_order = (latest, 0)
            latest_id = str(latest) if latest else None
            if after is None:
                return Replay((), False, latest_order, latest_id)
            try:
                last_seen = int(after)
            except ValueError:
                return Replay((), True, latest_order, latest_id)
            if last_seen < 0 or last_seen > latest:
                return Replay((), True, latest_order, latest_id)
            if last_seen == latest:
                return Replay((), False, latest_order, latest_id)
            cutoff = utcnow() - self._max_age
            rows = (
                await connection.execute(
                    select(Event.seq, Event.type, Event.payload, Event.created_at)
                    .where(
                        Event.owner_id == owner_id,
                        Event.seq > last_seen,
                        Event.seq <= latest,
                    )
                    .order_by(Event.seq)
                )
            ).all()
        if not rows or rows[0].seq != last_seen + 1 or rows[0].created_at < cutoff:
            return Replay((), True, latest_order, latest_id)
        events = [
            LoggedEvent(owner_id, str(seq), (seq, 0), type_, payload, iso(created))
            for seq, type_, payload, created in rows
        ]
        return Replay(events, False, latest_order, latest_id)

    async def tail(self, deliver: Deliver, ready: Callable[[], None]) -> None:
        engine = self._engine()
        cursor = await self._start(engine)
        ready()
        gaps: dict[int, float] = {}
        failing = False
        next_age_sweep = time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            if self._stopping:
                return
            try:
                cursor = await self._read_new(engine, cursor, gaps, deliver)
                if time.monotonic() >= next_age_sweep:
                    next_age_sweep = time.monotonic() + _AGE_SWEEP_SECONDS
                    await self._delete_old(engine)
            except (SQLAlchemyError, OSError) as exc:
                if not failing:
                    logger.warning("could not read new events (%s); retrying", _first_line(exc))
                failing = True
                await asyncio.sleep(1)
            else:
                if failing:
                    logger.warning("reading new events again")
                failing = False

    async def _start(self, engine: AsyncEngine) -> int:
        failing = False
        while True:
            try:
                async with engine.connect() as connection:
                    return (await connection.scalar(select(func.max(Event.id)))) or 0
            except (SQLAlchemyError, OSError) as exc:
                if not failing:
                    logger.warning(
                        "could not find the end of the event log (%s); retrying", _first_line(exc)
                    )
                failing = True
                await asyncio.sleep(1)

    async def _read_new(
        self, engine: AsyncEngine, cursor: int, gaps: dict[int, float], deliver: Deliver
    ) -> int:
        now = time.monotonic()
        for gap in [gap for gap, deadline in gaps.items() if deadline < now]:
            del gaps[gap]
        newer = Event.id > cursor
        query = select(
            Event.id, Event.owner_id, Event.seq, Event.type, Event.payload, Event.created_at
        )
        query = query.where(or_(newer, Event.id.in_(list(gaps))) if gaps else newer)
        async with engine.connect() as connection:
            rows = (await connection.execute(query.order_by(Event.id).limit(_TAIL_BATCH))).all()
        if not rows:
            return cursor
        events = []
        for event_id, owner_id, seq, type_, payload, created in rows:
            if event_id in gaps:
                del gaps[event_id]
            elif event_id > cursor:
                if event_id > cursor + 1 and len(gaps) < _MAX_GAPS:
                    for missing in range(cursor + 1, min(event_id, cursor + 1 + _MAX_GAPS)):
                        gaps[missing] = now + _GAP_SECONDS
                cursor = event_id
            else:
                continue
            events.append(LoggedEvent(owner_id, str(seq), (seq, 0), type_, payload, iso(created)))
        deliver(events)
        if len(rows) == _TAIL_BATCH:
            self._wakeup.set()  # more are waiting
        return cursor

    async def _delete_old(self, engine: AsyncEngine) -> None:
        cutoff = utcnow() - self._max_age
        async with engine.connect() as connection:
            while True:
                ids = (
                    await connection.scalars(
                        select(Event.id).where(Event.created_at < cutoff).limit(_TAIL_BATCH)
                    )
                ).all()
                if not ids:
                    return
                await connection.execute(delete(Event).where(Event.id.in_(ids)))

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def close(self) -> None:
        return None


async def _next_seq(session: AsyncSession, owner_id: int) -> int:
    """Take the user's next event id, locking their counter row until the transaction ends."""
    bump = (
        update(EventCounter)
        .where(EventCounter.owner_id == owner_id)
        .values(last_seq=EventCounter.last_seq + 1)
        .execution_options(synchronize_session=False)
    )
    if session.get_bind().dialect.name == "mysql":  # MariaDB: no UPDATE ... RETURNING
        await session.execute(bump)
        seq = await session.scalar(
            select(EventCounter.last_seq).where(EventCounter.owner_id == owner_id)
        )
    else:
        seq = await session.scalar(bump.returning(EventCounter.last_seq))
    if seq is None:  # an account made before its counter existed: start it
        seq = 1 + (
            await session.scalar(select(func.max(Event.seq)).where(Event.owner_id == owner_id)) or 0
        )
        await session.execute(insert(EventCounter).values(owner_id=owner_id, last_seq=seq))
    return int(seq)


async def start_log(session: AsyncSession, owner_id: int) -> None:
    """Give a new account its counter (in the transaction that creates the account)."""
    await session.execute(insert(EventCounter).values(owner_id=owner_id, last_seq=0))


# --- Redis ----------------------------------------------------------------------------------

# KEYS: the user's stream, the shared stream. ARGV: owner, type, data, created_at, the user
# stream's length cap, its oldest id to keep (ms), the shared stream's cap, the user stream's
# lifetime (s). Returns the new entry's id.
_APPEND_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], '*',
  't', ARGV[2], 'd', ARGV[3], 'c', ARGV[4])
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
  'o', ARGV[1], 'i', id, 't', ARGV[2], 'd', ARGV[3], 'c', ARGV[4])
return id
"""

_FANOUT_CAP = 100_000
_TAIL_BLOCK_MS = 5000
REDIS_TIMEOUT_SECONDS = 5.0


def _stream_order(stream_id: str) -> Order:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence or 0)


class _Batch:
    """The events of one transaction, sent once it commits."""

    def __init__(self, log: "RedisEventLog") -> None:
        self.log = log
        self.events: list[_Pending] = []

    async def __call__(self) -> None:
        await self.log.publish(self.events)


@dataclass(slots=True)
class _Pending:
    owner_id: int
    type: str
    data: str
    created_at: str


class RedisEventLog:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self._url = settings.redis_url
        self._prefix = f"{settings.redis_key_prefix}events:"
        self._fanout_key = f"{self._prefix}all"
        self._retention = settings.event_retention
        self._max_age_ms = int(settings.event_retention_hours * 3600 * 1000)
        self._redis = Redis.from_url(
            self._url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._append = self._redis.register_script(_APPEND_SCRIPT)
        self._publishing = asyncio.Lock()

    def _user_key(self, owner_id: int) -> str:
        return f"{self._prefix}user:{owner_id}"

    async def append(
        self, session: AsyncSession, owner_id: int, type_: str, data: str, created_at: datetime
    ) -> None:
        batch = next(
            (
                callback
                for callback in awaiting_commit(session)
                if isinstance(callback, _Batch) and callback.log is self
            ),
            None,
        )
        if batch is None:
            batch = _Batch(self)
            after_commit(session, batch)
        batch.events.append(_Pending(owner_id, type_, data, iso(created_at)))

    async def publish(self, events: Sequence[_Pending]) -> None:
        """Send committed events, in commit order (one at a time: the lock is first come,
        first served). An event Redis cannot take is lost, not retried: its change stands."""
        async with self._publishing:
            for event in events:
                try:
                    await self._append(
                        keys=[self._user_key(event.owner_id), self._fanout_key],
                        args=[
                            event.owner_id,
                            event.type,
                            event.data,
                            event.created_at,
                            self._retention,
                            int(time.time() * 1000) - self._max_age_ms,
                            _FANOUT_CAP,
                            self._max_age_ms,
                        ],
                    )
                except (RedisError, OSError):
                    logger.warning(
                        "could not send a %s event of user %s to Redis; it is lost",
                        event.type,
                        event.owner_id,
                        exc_info=True,
                    )

    async def replay(self, owner_id: int, after: str | None) -> Replay:
        key = self._user_key(owner_id)
        try:
            info: dict[str, Any] = await self._redis.xinfo_stream(key)
        except ResponseError:  # no such key: no event in the retention window
            return Replay((), after is not None, (0, 0), None)
        latest_id: str = info["last-generated-id"]
        latest = _stream_order(latest_id)
        if after is None:
            return Replay((), False, latest, latest_id)
        try:
            last_seen = _stream_order(after)
        except ValueError:
            return Replay((), True, latest, latest_id)
        trimmed = _stream_order(info.get("max-deleted-entry-id") or "0-0")
        if last_seen > latest or trimmed > last_seen:
            return Replay((), True, latest, latest_id)
        if last_seen == latest:
            return Replay((), False, latest, latest_id)
        entries: Any = await self._redis.xrange(key, min=f"({after}", max=latest_id)
        events = [
            LoggedEvent(
                owner_id, entry_id, _stream_order(entry_id), fields["t"], fields["d"], fields["c"]
            )
            for entry_id, fields in entries
        ]
        return Replay(events, False, latest, latest_id)

    async def tail(self, deliver: Deliver, ready: Callable[[], None]) -> None:
        # Its own connection: a blocking read holds one for up to _TAIL_BLOCK_MS.
        redis = Redis.from_url(
            self._url,
            decode_responses=True,
            socket_timeout=_TAIL_BLOCK_MS / 1000 + REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        cursor = "$"
        failing = False
        try:
            while True:
                try:
                    if cursor == "$":
                        try:
                            info = await redis.xinfo_stream(self._fanout_key)
                            cursor = info["last-generated-id"]
                        except ResponseError:  # the shared stream does not exist yet
                            cursor = "0-0"
                        ready()
                    replies: Any = await redis.xread(
                        {self._fanout_key: cursor}, count=_TAIL_BATCH, block=_TAIL_BLOCK_MS
                    )
                except (RedisError, OSError) as exc:
                    if not failing:
                        logger.warning(
                            "could not read events from Redis (%s); retrying", _first_line(exc)
                        )
                    failing = True
                    await asyncio.sleep(1)
                    continue
                if failing:
                    logger.warning("reading events from Redis again")
                failing = False
                for _key, entries in replies:
                    if not entries:
                        continue
                    cursor = entries[-1][0]
                    deliver(
                        [
                            LoggedEvent(
                                int(fields["o"]),
                                fields["i"],
                                _stream_order(fields["i"]),
                                fields["t"],
                                fields["d"],
                                fields["c"],
                            )
                            for _entry_id, fields in entries
                        ]
                    )
        finally:
            await redis.aclose()

    def stop(self) -> None:
        return None  # the blocking read holds no database connection: cancelling it is fine

    async def close(self) -> None:
        await self._redis.aclose()


def create_event_log(settings: Settings, reader: AsyncEngine | None = None) -> EventLog:
    """The log for this process: Redis when STOREROOM_REDIS_URL is set, else the database
    (`reader`, the autocommit engine, for reading it; a process that only appends needs none)."""
    if settings.redis_url:
        return RedisEventLog(settings)
    return DatabaseEventLog(
        retention=settings.event_retention,
        retention_hours=settings.event_retention_hours,
        poll_interval_seconds=settings.event_poll_interval_seconds,
        reader=reader,
    )


def session_info(log: EventLog) -> dict[str, Any]:
    return {SESSION_KEY: log}


def log_of(session: AsyncSession) -> EventLog | None:
    log: EventLog | None = session.info.get(SESSION_KEY)
    return log
