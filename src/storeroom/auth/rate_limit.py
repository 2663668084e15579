"""Auth: rate limits, kept in the database or in Redis: failed logins per account and per client
IP, and requests per caller to the endpoints that create accounts or send email.

Failed logins: a sliding window. An account (or an IP) with `max_failures` failures in the
last `window` is refused, even with the right password, until its oldest failure leaves the
window. An attempt is counted *before* its password is checked, in one atomic step that refuses
it instead when a limit is reached, so a burst of simultaneous guesses cannot carry more than
`max_failures` of them to the check. Refused attempts are not counted, so a blocked caller
cannot extend its own block forever. A successful login forgets the failures of that account
from that IP, its own attempt among them: someone else's failures against the account, from
another address, stay counted. The account is the matched one (`user_key`), or the normalised
address for an unknown one (`address_key`), never the string as typed.

Requests: `RequestLimit`s, each at most so many requests per window for one key (the caller's
address, the address a recovery email goes to); a request is counted against all of its limits
at once or, when one is reached, refused and not counted.
"""

import logging
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy import CursorResult, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storeroom.auth.exceptions import LoginThrottled, RequestsThrottled
from storeroom.auth.models import (
    RATE_LIMIT_KEY_LENGTH,
    LoginFailure,
    RateLimitLock,
    RequestHit,
)
from storeroom.core import security
from storeroom.core.config import Settings
from storeroom.core.db import UTCDateTime
from storeroom.core.security import PasswordCheck
from storeroom.metrics import service as metrics_service
from storeroom.users.schemas import normalize_email

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ACCOUNT_KEY_LENGTH = 254  # login_failures.account
# Expired rows are cleared at most this often (by the limiter's clock), not on every attempt.
PRUNE_INTERVAL = timedelta(seconds=60)
PRUNE_BATCH = 1000
# A Redis that does not answer must not hold a login for long: after a failure the database
# counts alone for this long before Redis is tried again (/readyz tries it on every probe).
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_RETRY_SECONDS = 5.0


def user_key(user_id: int) -> str:
    """The limiter's key for an account: its id, whatever address was typed to reach it."""
    return f"user:{user_id}"


def address_key(email: str) -> str:
    """The limiter's key for an address no account has: normalised, so that case and spaces
    do not make new keys (a NUL, which no database column can compare, is replaced)."""
    address = normalize_email(email.replace("\x00", "\ufffd"))
    return f"email:{address}"[:MAX_ACCOUNT_KEY_LENGTH]


@dataclass(frozen=True, slots=True)
class RequestLimit:
    """At most `max_requests` requests per `window` for `key` (e.g. `registration-ip:<ip>`)."""

    key: str
    max_requests: int
    window: timedelta


@dataclass(frozen=True, slots=True)
class _Count:
    """What a key holds in its window: how many, the oldest, and the limit it is held to."""

    count: int
    oldest: datetime | None
    limit: int
    window: timedelta


def _retry_after(now: datetime, counts: Iterable[_Count]) -> int:
    """Seconds until every key is under its limit again; 0 when all of them are now."""
    waits = [
        (counted.oldest + counted.window - now).total_seconds()
        for counted in counts
        if counted.count >= counted.limit and counted.oldest is not None
    ]
    return max(1, math.ceil(max(waits))) if waits else 0


class LoginLimiter(ABC):
    """The rate limits of one process: failed logins, and requests per caller. One
    implementation per back end, chosen at startup (`create_login_limiter`)."""

    def __init__(self, max_failures: int, window: timedelta) -> None:
        self.max_failures = max_failures
        self.window = window

    @abstractmethod
    async def reserve(self, account: str, client_ip: str, now: datetime) -> int:
        """Count an attempt on `account` from `client_ip` as a failure, unless either has
        reached the limit: then nothing is counted and the answer is the seconds until an
        attempt is allowed again (0 when it was counted)."""

    @abstractmethod
    async def forget(self, account: str, client_ip: str) -> None:
        """Drop the failures of this account from this IP (after it logged in from there)."""

    @abstractmethod
    async def hit(self, limits: Sequence[RequestLimit], now: datetime) -> int:
        """Count a request against every limit, unless one is reached: then nothing is
        counted and the answer is the seconds until it is allowed (0 when it was counted)."""

    @abstractmethod
    async def status(self) -> str:
        """Where the counters are kept, as /readyz reports it."""

    async def close(self) -> None:
        return None

    async def verify_password(
        self, account: str, client_ip: str, now: datetime, password: str, hashed: str | None
    ) -> PasswordCheck:
        """Check a password within the limits: every password check goes through here (the
        token form, HTTP Basic, `current_password`), so none of them can be brute-forced.
        `hashed` is None for an unknown account, which costs the same and counts the same.
        No database connection is held while the password is hashed."""
        retry_after = await self.reserve(account, client_ip, now)
        if retry_after:
            metrics_service.THROTTLED.labels(limit="login").inc()
            raise LoginThrottled(retry_after=retry_after)
        result = await security.verify_password(password, hashed)
        if result.valid:
            await self.forget(account, client_ip)
        else:
            metrics_service.LOGIN_FAILURES.inc()
        return result

    async def limit_requests(self, limits: Sequence[RequestLimit], now: datetime) -> None:
        """Count this request, or refuse it with 429 and Retry-After."""
        retry_after = await self.hit(limits, now)
        if retry_after:
            metrics_service.THROTTLED.labels(limit="requests").inc()
            raise RequestsThrottled(retry_after=retry_after)


class DatabaseLoginLimiter(LoginLimiter):
    """Counters as rows (`login_failures`, `request_hits`), each attempt in its own short
    transaction: the login that failed rolls its request back, the failure must stay, and the
    request's own connection must not be held while this one is taken. An attempt locks one
    `rate_limit_locks` row per key (an UPDATE, in key order: on SQLite the write lock) before it
    counts and records, so attempts on one key are counted one at a time."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        max_failures: int,
        window: timedelta,
        *,
        retention: timedelta | None = None,
    ) -> None:
        super().__init__(max_failures, window)
        self._sessionmaker = sessionmaker
        # Rows older than this count for no limit: the longest window of any limit.
        self._retention = max(window, retention or window)
        self._pruned_at: datetime | None = None

    async def reserve(self, account: str, client_ip: str, now: datetime) -> int:
        await self._prune(now)
        by_account = LoginFailure.account == account
        by_ip = LoginFailure.client_ip == client_ip
        query = select(
            func.sum(case((by_account, 1), else_=0)),
            func.min(case((by_account, LoginFailure.failed_at)), type_=UTCDateTime()),
            func.sum(case((by_ip, 1), else_=0)),
            func.min(case((by_ip, LoginFailure.failed_at)), type_=UTCDateTime()),
        ).where(or_(by_account, by_ip), LoginFailure.failed_at > now - self.window)
        locks = (f"login-account:{account}", f"login-ip:{client_ip}")
        async with self._locked(locks, now) as session:
            account_failures, account_oldest, ip_failures, ip_oldest = (
                await session.execute(query)
            ).one()
            retry_after = _retry_after(
                now,
                (
                    _Count(
                        int(account_failures or 0), account_oldest, self.max_failures, self.window
                    ),
                    _Count(int(ip_failures or 0), ip_oldest, self.max_failures, self.window),
                ),
            )
            if not retry_after:
                session.add(LoginFailure(account=account, client_ip=client_ip, failed_at=now))
                await session.commit()
            return retry_after

    async def forget(self, account: str, client_ip: str) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                delete(LoginFailure).where(
                    LoginFailure.account == account, LoginFailure.client_ip == client_ip
                )
            )
            await session.commit()

    async def hit(self, limits: Sequence[RequestLimit], now: datetime) -> int:
        await self._prune(now)
        query = (
            select(RequestHit.key, func.count(), func.min(RequestHit.hit_at, type_=UTCDateTime()))
            .where(
                or_(
                    *(
                        and_(RequestHit.key == limit.key, RequestHit.hit_at > now - limit.window)
                        for limit in limits
                    )
                )
            )
            .group_by(RequestHit.key)
        )
        async with self._locked([limit.key for limit in limits], now) as session:
            counted: dict[str, tuple[int, datetime | None]] = {
                key: (count, oldest) for key, count, oldest in await session.execute(query)
            }
            retry_after = _retry_after(
                now,
                (
                    _Count(*counted.get(limit.key, (0, None)), limit.max_requests, limit.window)
                    for limit in limits
                ),
            )
            if not retry_after:
                session.add_all(RequestHit(key=limit.key, hit_at=now) for limit in limits)
                await session.commit()
            return retry_after

    async def status(self) -> str:
        return "database"

    @asynccontextmanager
    async def _locked(self, keys: Iterable[str], now: datetime) -> AsyncIterator[AsyncSession]:
        """A session whose transaction holds the lock row of every key: one UPDATE each, in key
        order, so two attempts sharing keys never wait for each other in a circle. A missing
        row (a new key, or one pruned meanwhile) is created outside the transaction, then the
        locks are taken again."""
        ordered = sorted({key[:RATE_LIMIT_KEY_LENGTH] for key in keys})
        async with self._sessionmaker() as session:
            for _attempt in range(3):
                missing = []
                for key in ordered:
                    locked = await session.execute(
                        update(RateLimitLock)
                        .where(RateLimitLock.key == key)
                        .values(locked_at=now)
                        .execution_options(synchronize_session=False)
                    )
                    if cast(CursorResult[Any], locked).rowcount != 1:
                        missing.append(key)
                if not missing:
                    yield session
                    return
                await session.rollback()
                for key in missing:
                    try:
                        await session.execute(insert(RateLimitLock).values(key=key, locked_at=now))
                        await session.commit()
                    except IntegrityError:  # another attempt created it first
                        await session.rollback()
        raise RuntimeError(f"rate-limit lock rows for {ordered} keep disappearing")

    async def _prune(self, now: datetime) -> None:
        """Clear rows that no window counts any more, at most once per PRUNE_INTERVAL. Each
        table in its own transaction (an InnoDB range delete and an insert in one transaction
        deadlock against a concurrent attempt doing the same), and lock rows one at a time, so
        the prune never holds one lock while waiting for another."""
        if (
            self._pruned_at is not None
            and self._pruned_at <= now < self._pruned_at + PRUNE_INTERVAL
        ):
            return
        self._pruned_at = now
        horizon = now - self._retention
        async with self._sessionmaker() as session:
            await session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= horizon))
            await session.commit()
            await session.execute(delete(RequestHit).where(RequestHit.hit_at <= horizon))
            await session.commit()
            stale = (
                await session.scalars(
                    select(RateLimitLock.key)
                    .where(RateLimitLock.locked_at <= horizon)
                    .limit(PRUNE_BATCH)
                )
            ).all()
            await session.commit()
            for key in stale:
                await session.execute(
                    delete(RateLimitLock).where(
                        RateLimitLock.key == key, RateLimitLock.locked_at <= horizon
                    )
                )
                await session.commit()


# Count an attempt against every key unless one of them is at its limit, in one step.
# KEYS: the keys. ARGV: now, a member unique to this attempt, then for each key its horizon
# (members scored at or before it have left the window), its limit (0: record only) and its
# time to live in seconds. Returns {} when counted, else (key index, oldest score) for each key
# at its limit.
_HIT_SCRIPT = """
local now, member = ARGV[1], ARGV[2]
local refused = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[3 * i])
  local limit = tonumber(ARGV[3 * i + 1])
  if limit > 0 and redis.call('ZCARD', key) >= limit then
    table.insert(refused, i)
    table.insert(refused, redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
  end
end
if #refused > 0 then
  return refused
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('EXPIRE', key, ARGV[3 * i + 2])
end
return {}
"""

# Forget the failures of one (account, IP) pair. KEYS: the account's set, the IP's set, and the
# pair's, which names the members to remove from the other two.
_FORGET_SCRIPT = """
local members = redis.call('ZRANGE', KEYS[3], 0, -1)
for first = 1, #members, 1000 do
  local last = math.min(first + 999, #members)
  redis.call('ZREM', KEYS[1], unpack(members, first, last))
  redis.call('ZREM', KEYS[2], unpack(members, first, last))
end
redis.call('DEL', KEYS[3])
return #members
"""


class RedisLoginLimiter(LoginLimiter):
    """Counters as sorted sets scored by time, shared by every API process: for logins one set
    per account, one per IP, and one per (account, IP) pair that remembers which members to
    forget after a success; for requests one set per key. Each operation is one Lua script,
    so counting and recording are one atomic step."""

    def __init__(self, redis: Redis, prefix: str, max_failures: int, window: timedelta) -> None:
        super().__init__(max_failures, window)
        self._redis = redis
        self._prefix = prefix
        self._hit = redis.register_script(_HIT_SCRIPT)
        self._forget = redis.register_script(_FORGET_SCRIPT)

    def _login_keys(self, account: str, client_ip: str) -> tuple[str, str, str]:
        base = f"{self._prefix}login-failures:"
        return (
            f"{base}account:{account}",
            f"{base}ip:{client_ip}",
            f"{base}pair:{client_ip}:{account}",
        )

    async def _count(self, now: datetime, limits: Sequence[tuple[str, int, timedelta]]) -> int:
        """Run the hit script over (key, limit, window) triples; a limit of 0 only records."""
        arguments: list[str | float | int] = [now.timestamp(), uuid.uuid4().hex]
        for _key, limit, window in limits:
            arguments += [
                (now - window).timestamp(),
                limit,
                math.ceil(window.total_seconds()),
            ]
        refused = await self._hit(keys=[key for key, _, _ in limits], args=arguments)
        counts = []
        for index, oldest in zip(refused[::2], refused[1::2], strict=True):
            _key, limit, window = limits[int(index) - 1]
            counts.append(_Count(limit, _from_score(oldest, now), limit, window))  # at its limit
        return _retry_after(now, counts)

    async def reserve(self, account: str, client_ip: str, now: datetime) -> int:
        account_key, ip_key, pair_key = self._login_keys(account, client_ip)
        return await self._count(
            now,
            [
                (account_key, self.max_failures, self.window),
                (ip_key, self.max_failures, self.window),
                (pair_key, 0, self.window),
            ],
        )

    async def forget(self, account: str, client_ip: str) -> None:
        await self._forget(keys=list(self._login_keys(account, client_ip)))

    async def hit(self, limits: Sequence[RequestLimit], now: datetime) -> int:
        return await self._count(
            now,
            [
                (f"{self._prefix}requests:{limit.key}", limit.max_requests, limit.window)
                for limit in limits
            ],
        )

    async def status(self) -> str:
        await self._redis.ping()
        return "redis"

    async def close(self) -> None:
        await self._redis.aclose()


def _from_score(score: bytes | str, now: datetime) -> datetime:
    return datetime.fromtimestamp(float(score), now.tzinfo)


class FailoverLoginLimiter(LoginLimiter):
    """Redis, and the database while Redis cannot be reached: logins and limited requests keep
    working on the database's counters (which hold only what was counted there), a warning
    says so once, /readyz shows it, and Redis is used again as soon as it answers."""

    def __init__(
        self,
        redis_limiter: RedisLoginLimiter,
        database_limiter: DatabaseLoginLimiter,
        *,
        retry_seconds: float = REDIS_RETRY_SECONDS,
    ) -> None:
        super().__init__(redis_limiter.max_failures, redis_limiter.window)
        self._redis = redis_limiter
        self._database = database_limiter
        self._retry_seconds = retry_seconds
        self._down = False
        self._retry_at = 0.0

    async def _use(
        self, operation: Callable[[LoginLimiter], Awaitable[T]], *, probe: bool = False
    ) -> T:
        if probe or not self._down or time.monotonic() >= self._retry_at:
            try:
                result = await operation(self._redis)
            except RedisError as exc:
                if not self._down:
                    logger.warning(
                        "Redis is unreachable (%s): rate limits are counted in the database "
                        "until it answers again",
                        exc,
                    )
                self._down = True
                self._retry_at = time.monotonic() + self._retry_seconds
            else:
                if self._down:
                    logger.warning("Redis answers again: rate limits are counted there again")
                self._down = False
                return result
        return await operation(self._database)

    async def reserve(self, account: str, client_ip: str, now: datetime) -> int:
        return await self._use(lambda limiter: limiter.reserve(account, client_ip, now))

    async def forget(self, account: str, client_ip: str) -> None:
        await self._use(lambda limiter: limiter.forget(account, client_ip))

    async def hit(self, limits: Sequence[RequestLimit], now: datetime) -> int:
        return await self._use(lambda limiter: limiter.hit(limits, now))

    async def status(self) -> str:
        backend = await self._use(lambda limiter: limiter.status(), probe=True)
        return backend if backend == "redis" else "database (redis unreachable)"

    async def close(self) -> None:
        await self._redis.close()
        await self._database.close()


def create_login_limiter(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> LoginLimiter:
    window = timedelta(seconds=settings.login_failure_window_seconds)
    database = DatabaseLoginLimiter(
        sessionmaker,
        settings.login_max_failures,
        window,
        retention=timedelta(
            seconds=max(
                settings.registration_window_seconds, settings.password_recovery_window_seconds
            )
        ),
    )
    if not settings.redis_url:
        return database
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),  # once, on a fresh connection (say, after a restart)
    )
    return FailoverLoginLimiter(
        RedisLoginLimiter(redis, settings.redis_key_prefix, settings.login_max_failures, window),
        database,
    )
