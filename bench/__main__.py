"""`python -m bench [name ...]`: run the named benchmarks (all when none is named)."""

import importlib
import sys

BENCHMARKS = [
    "foundation",
    "auth_credentials",
    "password_recovery_timing",
    "items",
    "files",
    "http_protocol",
    "database_liveness",
    "login_storm",
    "jobs_latency",
    "jobs_import",
    "sse_fanout",
    "throughput",
    "s3_transfer",
]


def main(argv: list[str]) -> None:
    for name in argv or BENCHMARKS:
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        sys.argv = [f"bench.{name}"]  # each script's own options keep their defaults
        importlib.import_module(f"bench.{name}").main()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
