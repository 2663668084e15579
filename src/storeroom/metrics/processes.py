"""Metrics across processes: where the processes of one `storeroom serve`, or of one
`storeroom worker`, write their values. Imports nothing of prometheus_client, which must not be
imported before this has run: it reads PROMETHEUS_MULTIPROC_DIR once, at import."""

import os
import shutil
from pathlib import Path

from storeroom.core.paths import private_dir

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def inherited_multiprocess_dir() -> str | None:
    """The directory of the command that started this process (the embedded job worker's is
    its `serve`'s), if any."""
    return os.environ.get(MULTIPROC_ENV) or None


def use_multiprocess_dir(directory: Path) -> None:
    """Have this process and every process it starts write their values as files under
    `directory`, so that a scrape of any of them sums them all (prometheus_client's
    multiprocess mode). Emptied first: counters of an earlier run would be summed with this
    one's. One directory per command (serve per port, worker per metrics port): two commands
    on one directory would empty each other's."""
    if directory.exists():
        shutil.rmtree(directory)
    private_dir(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
