"""Security primitives: password hashing off the event loop, and signed JWTs."""

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

JWT_ALGORITHM = "HS256"

T = TypeVar("T")

# Argon2 for new hashes; bcrypt hashes from older systems still verify and get rehashed.
password_hash = PasswordHash((Argon2Hasher(), BcryptHasher()))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against when the account does not exist, so that an unknown email
    costs the same time as a wrong password."""
    return password_hash.hash("storeroom-timing-equaliser")


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    valid: bool
    new_hash: str | None  # set when the stored hash should be upgraded (e.g. bcrypt -> argon2)


def _check_password(password: str, hashed: str | None) -> PasswordCheck:
    if hashed is None:
        password_hash.verify(password, _dummy_hash())
        return PasswordCheck(False, None)
    try:
        valid, new_hash = password_hash.verify_and_update(password, hashed)
    except Exception:  # an unknown or corrupt hash format never authenticates
        return PasswordCheck(False, None)
    return PasswordCheck(valid, new_hash if valid else None)


def _exit_with(api_process_id: int) -> None:
    """A worker must not outlive the API process that started it, even one that ends without
    stopping its pool (killed outright, or an app that does not own its process)."""
    while True:
        time.sleep(1)
        try:
            os.kill(api_process_id, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # the pid was reused by another user's process
            os._exit(0)


def _start_hashing_worker(api_process_id: int) -> None:
    """Hashing processes run at the lowest priority, so a storm of logins cannot starve the
    requests that need no hashing. Nice 19 rather than SCHED_IDLE: measured, /healthz p99 under
    a login storm is the same, and logins still make progress on a saturated machine.

    They ignore the signals that stop the service: Ctrl+C reaches a terminal's whole process
    group, and so does a service manager's SIGTERM (systemd's default KillMode), and a worker
    that died of it would fail the logins the API process is still finishing. The API process
    stops its workers once its requests are done (`stop_hashing_pool`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(19)
    threading.Thread(target=_exit_with, args=(api_process_id,), daemon=True).start()
    _dummy_hash()


class _HashingPool:
    """Argon2 is CPU-bound and deliberately slow, so it runs in its own processes, one per
    core: in threads of the API process, a hashing thread holding the GIL would make the event
    loop wait for it, and a low-priority one holding it would make the loop wait even longer.
    Started on first use and restarted if a worker dies. Spawned: safe from a process that
    already runs threads, and unlike forkserver it leaves nothing in /tmp behind a process that
    ends by a signal, as uvicorn's do (forkserver's socket directory stays there for good)."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.workers: int | None = None  # None: one per core

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("spawn")
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers or os.cpu_count() or 2,
                    mp_context=context,
                    initializer=_start_hashing_worker,
                    initargs=(os.getpid(),),
                )
            return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        executor = self._get()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)
            return await asyncio.get_running_loop().run_in_executor(self._get(), fn, *args)

    def stop(self) -> None:
        """Let the hashes in flight finish (queued ones are dropped), then wait for the workers
        to exit."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


_hashing_pool = _HashingPool()


def size_hashing_pool(workers: int | None) -> None:
    """How many hashing processes this process starts (None: one per core); for the process's
    own app, before its first hash."""
    _hashing_pool.workers = workers


async def stop_hashing_pool() -> None:
    """For a process that is about to exit: no worker outlives it. (The next hash would
    start a new pool.)"""
    await asyncio.to_thread(_hashing_pool.stop)


async def hash_password(password: str) -> str:
    return await _hashing_pool.run(password_hash.hash, password)


async def verify_password(password: str, hashed: str | None) -> PasswordCheck:
    return await _hashing_pool.run(_check_password, password, hashed)


class TokenError(Exception):
    """The token cannot be used."""


class TokenExpiredError(TokenError):
    """The token was valid once; its time is up."""


def create_token(
    subject: str,
    token_type: str,
    *,
    key: str,
    lifetime: timedelta,
    now: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": subject,
        "type": token_type,
        "iat": int(issued.timestamp()),
        "exp": int((issued + lifetime).timestamp()),
        "jti": uuid.uuid4().hex,
        **(extra or {}),
    }
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM), claims


@lru_cache(maxsize=8192)
def _verified_claims(token: str, key: str, expected_type: str) -> tuple[tuple[str, Any], ...]:
    """Signature and structure checks, cached per token: a client presents the same token on
    every request until it expires, and verifying it again proves nothing new. Only successes
    are cached (an exception is never stored), and expiry is checked on every use."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "exp", "iat", "jti", "type"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpiredError("Token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("Invalid token") from exc
    if claims.get("type") != expected_type:
        raise TokenError("Invalid token")
    return tuple(claims.items())


def decode_token(token: str, *, key: str, expected_type: str) -> dict[str, Any]:
    claims = dict(_verified_claims(token, key, expected_type))
    if claims["exp"] <= time.time():
        raise TokenExpiredError("Token expired")
    return claims


def new_opaque_token(nbytes: int = 32) -> str:
    """A random URL-safe token (refresh tokens, API keys): `nbytes` of entropy."""
    return secrets.token_urlsafe(nbytes)


def opaque_token_hash(token: str) -> str:
    """How opaque tokens are stored. sha256 is enough for 256 random bits (no dictionary to
    try), and fast enough to check on every request, unlike a password hash."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
