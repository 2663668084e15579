"""Auth: failed-login limits per account and per client IP, kept in the database or in Redis.

A sliding window: an account (or an IP) with `max_failures` failures in the last `window` is
refused, even with the right password, until its oldest failure leaves the window. Refused
attempts are not counted, so a blocked caller cannot extend its own block forever. A successful
login forgets only the failures of that account from that IP: someone else's failures against
the account, from another address, stay counted. The account is the matched one (`user_key`),
or the normalised address for an unknown one (`address_key`), never the string as typed.
"""

import math
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import and_, case, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storeroom.auth.exceptions import LoginThrottled
from storeroom.auth.models import LoginFailure
from storeroom.core import security
from storeroom.core.config import Settings
from storeroom.core.db import UTCDateTime
from storeroom.core.security import PasswordCheck
from storeroom.users.schemas import normalize_email

MAX_ACCOUNT_KEY_LENGTH = 254  # login_failures.account


def user_key(user_id: int) -> str:
    """The limiter's key for an account: its id, whatever address was typed to reach it."""
    return f"user:{user_id}"


def address_key(email: str) -> str:
    """The limiter's key for an address no account has: normalised, so that case and spaces
    do not make new keys (a NUL, which no database column can compare, is replaced)."""
    address = normalize_email(email.replace("\x00", "\ufffd"))
    return f"email:{address}"[:MAX_ACCOUNT_KEY_LENGTH]


@dataclass(frozen=True, slots=True)
class LoginWindow:
    retry_after: int  # seconds until another attempt is allowed; 0 when it is allowed now
    own_failures: int  # failures of this account from this IP still in the window


class LoginLimiter(ABC):
    def __init__(self, max_failures: int, window: timedelta) -> None:
        self.max_failures = max_failures
        self.window = window

    @abstractmethod
    async def check(self, account: str, client_ip: str, now: datetime) -> LoginWindow: ...

    @abstractmethod
    async def record_failure(self, account: str, client_ip: str, now: datetime) -> None: ...

    @abstractmethod
    async def forget(self, account: str, client_ip: str) -> None:
        """Drop the failures of this account from this IP (after it logged in from there)."""

    async def close(self) -> None:
        return None

    async def verify_password(
        self, account: str, client_ip: str, now: datetime, password: str, hashed: str | None
    ) -> PasswordCheck:
        """Check a password within the limits: every password check goes through here (the
        token form, HTTP Basic, `current_password`), so none of them can be brute-forced.
        `hashed` is None for an unknown account, which costs the same and counts the same."""
        window = await self.check(account, client_ip, now)
        if window.retry_after:
            raise LoginThrottled(retry_after=window.retry_after)
        result = await security.verify_password(password, hashed)
        if not result.valid:
            await self.record_failure(account, client_ip, now)
        elif window.own_failures:
            await self.forget(account, client_ip)
        return result

    def _retry_after(self, now: datetime, *counted: tuple[int, datetime | None]) -> int:
        """Seconds until every (failures, oldest failure) pair is under the limit again."""
        waits = [
            (oldest + self.window - now).total_seconds()
            for failures, oldest in counted
            if failures >= self.max_failures and oldest is not None
        ]
        return max(1, math.ceil(max(waits))) if waits else 0


class DatabaseLoginLimiter(LoginLimiter):
    """Failures as rows of `login_failures`, written in their own transactions: the login that
    failed rolls its request back, the failure must stay."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], max_failures: int, window: timedelta
    ) -> None:
        super().__init__(max_failures, window)
        self._sessionmaker = sessionmaker

    async def check(self, account: str, client_ip: str, now: datetime) -> LoginWindow:
        by_account = LoginFailure.account == account
        by_ip = LoginFailure.client_ip == client_ip
        query = select(
            func.sum(case((by_account, 1), else_=0)),
            func.min(case((by_account, LoginFailure.failed_at)), type_=UTCDateTime()),
            func.sum(case((by_ip, 1), else_=0)),
            func.min(case((by_ip, LoginFailure.failed_at)), type_=UTCDateTime()),
            func.sum(case((and_(by_account, by_ip), 1), else_=0)),
        ).where(or_(by_account, by_ip), LoginFailure.failed_at > now - self.window)
        async with self._sessionmaker() as session:
            row = (await session.execute(query)).one()
        account_failures, account_oldest, ip_failures, ip_oldest, own = row
        return LoginWindow(
            retry_after=self._retry_after(
                now,
                (int(account_failures or 0), account_oldest),
                (int(ip_failures or 0), ip_oldest),
            ),
            own_failures=int(own or 0),
        )

    async def record_failure(self, account: str, client_ip: str, now: datetime) -> None:
        async with self._sessionmaker() as session:
            # Two short transactions, not one: an InnoDB range delete and an insert in the same
            # transaction deadlock against a concurrent failure doing the same.
            await session.execute(
                delete(LoginFailure).where(LoginFailure.failed_at <= now - self.window)
            )
            await session.commit()
            session.add(LoginFailure(account=account, client_ip=client_ip, failed_at=now))
            await session.commit()

    async def forget(self, account: str, client_ip: str) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                delete(LoginFailure).where(
                    LoginFailure.account == account, LoginFailure.client_ip == client_ip
                )
            )
            await session.commit()


class RedisLoginLimiter(LoginLimiter):
    """Failures as members of sorted sets scored by time, so every API process shares them: one
    set per account, one per IP, and one per (account, IP) pair that remembers which members to
    forget after a success. Each operation is one round trip (a pipeline)."""

    def __init__(self, redis: Redis, prefix: str, max_failures: int, window: timedelta) -> None:
        super().__init__(max_failures, window)
        self._redis = redis
        self._prefix = prefix

    def _keys(self, account: str, client_ip: str) -> tuple[str, str, str]:
        base = f"{self._prefix}login-failures:"
        return (
            f"{base}account:{account}",
            f"{base}ip:{client_ip}",
            f"{base}pair:{client_ip}:{account}",
        )

    async def check(self, account: str, client_ip: str, now: datetime) -> LoginWindow:
        keys = self._keys(account, client_ip)
        horizon = (now - self.window).timestamp()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zremrangebyscore(key, "-inf", horizon)
            for key in keys:
                pipe.zcard(key)
            for key in keys[:2]:
                pipe.zrange(key, 0, 0, withscores=True)
            results = await pipe.execute()
        account_failures, ip_failures, own = results[3:6]
        account_oldest, ip_oldest = (
            datetime.fromtimestamp(oldest[0][1], now.tzinfo) if oldest else None
            for oldest in results[6:8]
        )
        return LoginWindow(
            retry_after=self._retry_after(
                now, (account_failures, account_oldest), (ip_failures, ip_oldest)
            ),
            own_failures=own,
        )

    async def record_failure(self, account: str, client_ip: str, now: datetime) -> None:
        member = uuid.uuid4().hex
        ttl = math.ceil(self.window.total_seconds())
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(account, client_ip):
                pipe.zadd(key, {member: now.timestamp()})
                pipe.expire(key, ttl)
            await pipe.execute()

    async def forget(self, account: str, client_ip: str) -> None:
        account_key, ip_key, pair_key = self._keys(account, client_ip)
        members = await self._redis.zrange(pair_key, 0, -1)
        async with self._redis.pipeline(transaction=True) as pipe:
            if members:
                pipe.zrem(account_key, *members)
                pipe.zrem(ip_key, *members)
            pipe.delete(pair_key)
            await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()


def create_login_limiter(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> LoginLimiter:
    window = timedelta(seconds=settings.login_failure_window_seconds)
    if settings.redis_url:
        return RedisLoginLimiter(
            Redis.from_url(settings.redis_url),
            settings.redis_key_prefix,
            settings.login_max_failures,
            window,
        )
    return DatabaseLoginLimiter(sessionmaker, settings.login_max_failures, window)
