"""Password recovery timing: a known and an unknown address must answer alike.

Serves the app with uvicorn on a free port (SQLite, outbox backend) and times
POST /api/v1/auth/password-recovery over HTTP, alternating a registered address and an
unregistered one, so that the email (a background task after the response) is outside the
measured time exactly as a client sees it. Prints median and p95 for each, and their ratios.

    .venv/bin/python bench/password_recovery_timing.py [--requests 400]
"""

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from storeroom.core.config import Settings
from storeroom.core.migrations import upgrade
from storeroom.main import create_app

RECOVERY = "/api/v1/auth/password-recovery"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(requests: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory)
        settings = Settings(
            data_dir=data_dir,
            secret_key="bench-" * 8,
            database_url=f"sqlite:///{data_dir / 'bench.db'}",
            # Hundreds of requests from one address for two addresses: far past the limits.
            password_recovery_max_per_ip=1_000_000,
            password_recovery_max_per_email=1_000_000,
        )
        upgrade(settings.database_url)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), log_level="error", access_log=False)
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
        thread.start()
        while not server.started:
            time.sleep(0.01)
        timings: dict[str, list[float]] = {"known": [], "unknown": []}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                registered = client.post(
                    "/api/v1/users", json={"email": "known@example.com", "password": "x" * 12}
                )
                assert registered.status_code == 201, registered.text
                bodies = set()
                for index in range(requests + 20):
                    kind = "known" if index % 2 else "unknown"
                    email = f"{kind}@example.com"
                    started = time.perf_counter()
                    response = client.post(RECOVERY, json={"email": email})
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 202, response.text
                    bodies.add(response.content)
                    if index >= 20:  # warm-up
                        timings[kind].append(elapsed * 1000)
        finally:
            server.should_exit = True
            thread.join()
        emails = len(list(settings.outbox_dir.glob("*.eml")))

    print(f"POST {RECOVERY}: {requests} requests, alternating, over HTTP (uvicorn, SQLite)")
    for kind, samples in timings.items():
        print(
            f"  {kind:>7} address: median {statistics.median(samples):6.2f} ms"
            f"   p95 {_percentile(samples, 0.95):6.2f} ms"
        )
    known, unknown = timings["known"], timings["unknown"]
    print(
        f"  ratio known/unknown: median {statistics.median(known) / statistics.median(unknown):.2f}"
        f"   p95 {_percentile(known, 0.95) / _percentile(unknown, 0.95):.2f}"
    )
    print(
        f"  distinct response bodies: {len(bodies)}; emails written: {emails} (1 welcome + resets)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    run(parser.parse_args().requests)


if __name__ == "__main__":
    main()
