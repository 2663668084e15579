"""Foundation benchmark (issue 2): GET /api/v1/users/me with a JWT against a bare FastAPI app,
and /healthz latency while 16 clients hammer POST /api/v1/auth/token.

Run: make bench BENCH_ARGS=foundation   (or: .venv/bin/python -m bench foundation)
Needs PostgreSQL (STOREROOM_BENCH_POSTGRES_URL) and wrk.
"""

import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from bench.common import (
    PASSWORD,
    fresh_postgres_database,
    parse_wrk,
    register_and_login,
    row,
    serve,
    storeroom_env,
    wrk,
    wrk_command,
)

SECONDS = 10
CONNECTIONS = 16


def _login_script(directory: Path) -> str:
    script = directory / "login.lua"
    script.write_text(
        textwrap.dedent(
            f"""
            wrk.method = "POST"
            wrk.body = "username=bench@example.com&password={PASSWORD}"
            wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
            """
        )
    )
    return str(script)


def main() -> None:
    database_url = fresh_postgres_database()
    with tempfile.TemporaryDirectory(prefix="storeroom-bench-") as workdir:
        with serve("bench.bare_app:app", factory=False) as bare:
            wrk(f"{bare.base_url}/healthz", seconds=2, connections=CONNECTIONS)  # warm up
            bare_result = wrk(f"{bare.base_url}/healthz", seconds=SECONDS, connections=CONNECTIONS)

        env = storeroom_env(database_url, workdir)
        with serve("storeroom.main:create_app", env=env) as server:
            token = register_and_login(server.base_url)
            auth = {"Authorization": f"Bearer {token}"}
            me_url = f"{server.base_url}/api/v1/users/me"
            wrk(me_url, seconds=2, connections=CONNECTIONS, headers=auth)  # warm up
            me = wrk(me_url, seconds=SECONDS, connections=CONNECTIONS, headers=auth)
            assert me.non_2xx == 0, f"{me.non_2xx} non-2xx responses from /users/me"

            health_url = f"{server.base_url}/healthz"
            idle = wrk(health_url, seconds=SECONDS, connections=1)
            storm = subprocess.Popen(
                wrk_command(
                    f"{server.base_url}/api/v1/auth/token",
                    seconds=SECONDS + 4,
                    connections=16,
                    script=_login_script(Path(workdir)),
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(2)  # let the storm build up
            during = wrk(health_url, seconds=SECONDS, connections=1)
            storm_output, _ = storm.communicate()
            logins = parse_wrk(storm_output)

    print("Foundation benchmark (1 uvicorn worker, PostgreSQL, wrk -t1)")
    row("bare FastAPI /healthz req/s (ceiling)", f"{bare_result.requests_per_second:,.0f}")
    row(
        f"GET /api/v1/users/me with JWT req/s (c={CONNECTIONS})",
        f"{me.requests_per_second:,.0f}  p50 {me.p('50%'):.2f} ms  p99 {me.p('99%'):.2f} ms",
    )
    row(
        "  ratio to bare FastAPI (target >= 15%)",
        f"{me.requests_per_second / bare_result.requests_per_second:.1%}",
    )
    row("/healthz p99 idle (c=1)", f"{idle.p('99%'):.2f} ms")
    row(
        "/healthz p99 during 16-client login storm",
        f"{during.p('99%'):.2f} ms  ({logins.requests_per_second:,.1f} logins/s, "
        f"{logins.non_2xx} non-2xx)",
    )
    row("  ratio storm/idle (target <= 3x)", f"{during.p('99%') / idle.p('99%'):.2f}x")


if __name__ == "__main__":
    main()
