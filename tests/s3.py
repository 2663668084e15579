"""A real S3 API for the tests: moto in server mode, in a process of its own on a free port
(stopped by its PID), and a view of what a storage holds, whichever backend it is."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from storeroom.core.config import Settings

REGION = "us-east-1"
ACCESS_KEY = "storeroom-test"
SECRET_KEY = "storeroom-test-secret"
BUCKET = "storeroom-test"
# What a process talking to the test store needs in its environment (credentials the standard
# AWS way), and no configuration from the machine's ~/.aws.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class MotoServer:
    """`python -m moto.server` on 127.0.0.1:<port>."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, log: Path, port: int | None = None) -> "MotoServer":
        port = port or _free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **AWS_ENV},
            )
        server = cls(process, port, log)
        server.wait_ready()
        return server

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not start: {self.log.read_text()[-2000:]}")

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def kill(self) -> None:
        """Stop the store at once, as a crash would (SIGKILL to its PID)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def moto_server(log: Path) -> Iterator[MotoServer]:
    server = MotoServer.start(log)
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


def s3_settings(settings: Settings, server: MotoServer, **update: Any) -> Settings:
    """`settings` storing files on the test store, under a prefix of their own."""
    return settings.model_copy(
        update={
            "storage_url": f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}",
            "s3_endpoint_url": server.endpoint_url,
            "s3_region": REGION,
            **update,
        }
    )


def storage_env(settings: Settings) -> dict[str, str]:
    """The STOREROOM_* (and AWS_*) variables that give a process the same storage."""
    env = {"STOREROOM_STORAGE_URL": settings.storage_url} if settings.storage_url else {}
    if settings.s3_endpoint_url:
        env |= {
            **AWS_ENV,
            "STOREROOM_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "STOREROOM_S3_REGION": settings.s3_region or REGION,
        }
    return env


@dataclass(frozen=True)
class Stored:
    """One thing in storage: a complete blob, or an incomplete write (a temp file, or a
    multipart upload not yet completed)."""

    name: str  # the blob's key, or ".<key>.part" / "upload:<key>" for incomplete writes
    location: str  # the file path or the object key
    complete: bool
    _view: "StoreView"

    def read_bytes(self) -> bytes:
        return self._view.read(self)

    def unlink(self) -> None:
        self._view.remove(self)

    def make_old(self, seconds: float) -> None:
        """Backdate it (local files only: S3 sets LastModified itself)."""
        stamp = time.time() - seconds
        os.utime(self.location, (stamp, stamp))


class StoreView:
    """What the storage behind `settings` holds, read directly (not through Storeroom)."""

    def __init__(self, settings: Settings):
        location = settings.storage_location
        self.s3 = location.scheme == "s3"
        self.root = location.path
        self.bucket = location.bucket
        self.prefix = location.prefix
        self._client: Any = None
        if self.s3:
            self._client = boto3.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"}),
            )

    def all(self) -> list[Stored]:
        if not self.s3:
            assert self.root is not None
            if not self.root.exists():
                return []
            return [
                Stored(path.name, str(path), not path.name.endswith(".part"), self)
                for path in sorted(self.root.rglob("*"))
                if path.is_file()
            ]
        found = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for entry in page.get("Contents", []):
                key = entry["Key"]
                found.append(Stored(key[len(self.prefix) :], key, True, self))
        for upload in self.uploads():
            found.append(Stored(f"upload:{upload['Key']}", upload["UploadId"], False, self))
        return found

    def uploads(self) -> list[dict[str, Any]]:
        assert self.s3
        response = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        uploads: list[dict[str, Any]] = response.get("Uploads", [])
        return uploads

    def read(self, stored: Stored) -> bytes:
        if not self.s3:
            return Path(stored.location).read_bytes()
        body: bytes = self._client.get_object(Bucket=self.bucket, Key=stored.location)[
            "Body"
        ].read()
        return body

    def remove(self, stored: Stored) -> None:
        if not self.s3:
            Path(stored.location).unlink()
        else:
            self._client.delete_object(Bucket=self.bucket, Key=stored.location)

    def put(self, key: str, data: bytes, age_seconds: float = 0) -> None:
        """A blob as if Storeroom had written it `age_seconds` ago (local files only)."""
        if not self.s3:
            assert self.root is not None
            path = self.root / key[:2] / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if age_seconds:
                stamp = time.time() - age_seconds
                os.utime(path, (stamp, stamp))
        else:
            assert not age_seconds, "S3 sets LastModified itself"
            self._client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{key}", Body=data)

    def start_upload(self) -> tuple[str, datetime]:
        """A multipart upload as a crashed server leaves it: started, never completed."""
        assert self.s3
        key = f"{self.prefix}{uuid.uuid4().hex}"
        self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return key, datetime.now(UTC)


def stored(settings: Settings) -> list[Stored]:
    """Everything the storage holds, complete or not."""
    return StoreView(settings).all()
