"""Private paths: the directories and files Storeroom creates are its owner's alone."""

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger("storeroom")

_GROUP_OR_OTHERS = 0o077
_SQLITE_COMPANIONS = ("wal", "shm", "journal")


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


def warn_if_shared(directory: Path) -> None:
    """A data directory the operator made is theirs to set, so it is not changed; but say so
    when other users can reach what Storeroom keeps in it."""
    try:
        directory_mode = stat.S_IMODE(directory.stat().st_mode)
    except FileNotFoundError:
        return  # Storeroom creates it, private, when it first needs it
    if directory_mode & _GROUP_OR_OTHERS:
        logger.warning(
            "The data directory %s is open to other users (mode %o) and holds the database, "
            "the signing key and uploaded files; to keep them out: chmod 700 %s",
            directory,
            directory_mode,
            directory,
        )


def sqlite_file(database_url: str) -> Path | None:
    """The file behind a sqlite:// URL, the way SQLAlchemy reads it (`sqlite:///relative`,
    `sqlite:////absolute`); None for another database, an in-memory or a `file:` URI one."""
    scheme, _, rest = database_url.partition("://")
    if scheme.split("+", 1)[0] != "sqlite" or not rest.startswith("/"):
        return None
    database = rest[1:].split("?", 1)[0]
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def private_sqlite_database(database_url: str) -> None:
    """Create the SQLite database file 0600 before SQLite does: SQLite gives the -wal, -shm and
    -journal files it creates the database file's mode. A database an earlier version created
    with the umask's mode (0644) is tightened: it holds every email and password hash."""
    database = sqlite_file(database_url)
    if database is None:
        return
    private_dir(database.parent)
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        _make_private([database, *(Path(f"{database}-{kind}") for kind in _SQLITE_COMPANIONS)])
    else:
        os.close(fd)


def _make_private(paths: list[Path]) -> None:
    tightened = []
    for path in paths:
        try:
            file_mode = stat.S_IMODE(path.stat().st_mode)
            if file_mode & _GROUP_OR_OTHERS:
                path.chmod(0o600)
                tightened.append(f"{path.name} (was {file_mode:o})")
        except FileNotFoundError:
            pass
        except OSError as exc:  # another user's file, say: tell the operator how to fix it
            logger.warning("Cannot make %s private (%s): chmod 600 %s", path, exc, path)
    if tightened:
        logger.warning(
            "Other users could read the database: tightened to 0600 (owner only) %s in %s",
            ", ".join(tightened),
            paths[0].parent,
        )
