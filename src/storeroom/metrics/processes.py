"""Metrics across processes: where `storeroom serve` and `storeroom worker` have their
processes write. Imports nothing of prometheus_client, which must not be imported before this
has run (it reads PROMETHEUS_MULTIPROC_DIR once, at import)."""

import os
import shutil
from pathlib import Path

from storeroom.core.paths import private_dir

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir(directory: Path) -> bool:
    """Have this process and every process it starts write their values as files under
    `directory`, so that a scrape of any of them sums them all (prometheus_client's
    multiprocess mode). A process started by one that did this (the embedded job worker
    under `serve`) inherits the directory and keeps it: False. Otherwise the directory is
    emptied first, since counters of an earlier run would be summed with this one's: True."""
    if os.environ.get(MULTIPROC_ENV):
        return False
    if directory.exists():
        shutil.rmtree(directory)
    private_dir(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    return True
