"""GET /api/v1/users/me throughput with each credential: Bearer vs X-API-Key vs HTTP Basic.

One uvicorn worker on PostgreSQL (a scratch database), measured with wrk:

    .venv/bin/python -m bench auth_credentials

Bearer costs a (cached) JWT check and one query, an API key a sha256 and a query or two, Basic
a full argon2 password hash on the hashing pool plus the login-limit check: expect Basic to be
far slower.
"""

import tempfile
import time
from base64 import b64encode

import httpx

from bench.common import (
    PASSWORD,
    fresh_postgres_database,
    row,
    serve,
    storeroom_env,
    wrk,
)
from storeroom.core.security import password_hash

EMAIL = "bench@example.com"
ME = "/api/v1/users/me"
SECONDS = 10
CONNECTIONS = 8


def _credentials(base_url: str) -> dict[str, dict[str, str]]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post("/api/v1/users", json={"email": EMAIL, "password": PASSWORD}).raise_for_status()
        login = client.post("/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD})
        login.raise_for_status()
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = client.post("/api/v1/users/me/api-keys", json={"name": "bench"}, headers=bearer)
        created.raise_for_status()
        basic = b64encode(f"{EMAIL}:{PASSWORD}".encode()).decode()
        credentials = {
            "Bearer": bearer,
            "API key": {"X-API-Key": created.json()["key"]},
            "Basic": {"Authorization": f"Basic {basic}"},
        }
        for headers in credentials.values():
            client.get(ME, headers=headers).raise_for_status()
        return credentials


def _password_check_milliseconds() -> float:
    """One argon2 verification in this process, for scale."""
    hashed = password_hash.hash(PASSWORD)
    started = time.perf_counter()
    for _ in range(5):
        password_hash.verify(PASSWORD, hashed)
    return (time.perf_counter() - started) / 5 * 1000


def main() -> None:
    database_url = fresh_postgres_database()
    results = {}
    with (
        tempfile.TemporaryDirectory(prefix="storeroom-bench-") as workdir,
        serve("storeroom.main:create_app", env=storeroom_env(database_url, workdir)) as server,
    ):
        for credential, headers in _credentials(server.base_url).items():
            url = server.base_url + ME
            wrk(url, seconds=2, connections=CONNECTIONS, headers=headers)  # warm up
            results[credential] = wrk(
                url, seconds=SECONDS, connections=CONNECTIONS, headers=headers
            )

    bearer = results["Bearer"].requests_per_second
    print(f"Credentials benchmark: GET {ME}, 1 uvicorn worker, PostgreSQL, wrk -c{CONNECTIONS}")
    row("one argon2 password check, single-threaded", f"{_password_check_milliseconds():.0f} ms")
    for credential, result in results.items():
        row(
            f"{credential} req/s",
            f"{result.requests_per_second:,.1f}  p50 {result.p('50%'):.1f} ms  "
            f"({result.requests_per_second / bearer:.1%} of Bearer, {result.non_2xx} non-2xx)",
        )


if __name__ == "__main__":
    main()
