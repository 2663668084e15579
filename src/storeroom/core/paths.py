"""Private paths: the directories and files Storeroom creates are its owner's alone."""

import os
from pathlib import Path


def private_dir(path: Path) -> None:
    """`mkdir -p` where every level created is 0700: `Path.mkdir(parents=True)` would create
    the parents with the umask's mode (0755 usually), open to every local user. Directories
    that exist already are left as they are."""
    try:
        os.mkdir(path, 0o700)
    except FileNotFoundError:
        if path.parent == path:
            raise
        private_dir(path.parent)
        private_dir(path)
    except FileExistsError:
        if not path.is_dir():
            raise
