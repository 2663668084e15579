"""The data directory: the development signing key stays the owner's."""

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

import storeroom
from storeroom import cli
from storeroom.core.config import ConfigurationError, Settings, get_settings
from storeroom.main import create_app

# Events Python audits just before it opens, links, renames, chmods or removes a file.
_FILE_EVENTS = frozenset({"open", "os.chmod", "os.link", "os.rename", "os.replace", "os.remove"})


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The common umask: whatever Storeroom does not restrict itself comes out 0644 / 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class FileModeWatcher:
    """Notes the mode of every file in a directory just before each file operation Python
    makes. A poller racing the code would need luck to land in the microseconds between a
    file's creation and a later chmod; this sees every state the code leaves the file in."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.seen: set[tuple[str, int]] = set()
        self._busy = False

    def __call__(self, event: str, _args: tuple[Any, ...]) -> None:
        if self.directory is None or self._busy or event not in _FILE_EVENTS:
            return
        self._busy = True  # scandir is audited too
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        file_mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                        self.seen.add((entry.name, file_mode))
        except FileNotFoundError:
            pass
        finally:
            self._busy = False


_watcher: FileModeWatcher | None = None


@pytest.fixture
def file_modes() -> Iterator[FileModeWatcher]:
    global _watcher
    if _watcher is None:  # an audit hook cannot be removed: install one, switch it on and off
        _watcher = FileModeWatcher()
        sys.addaudithook(_watcher)
    _watcher.seen = set()
    yield _watcher
    _watcher.directory = None


# The development signing key


def test_the_generated_key_file_is_never_readable_by_others(
    tmp_path: Path, file_modes: FileModeWatcher
) -> None:
    file_modes.directory = tmp_path
    key = Settings(data_dir=tmp_path).signing_key()
    file_modes.directory = None
    assert len(key) >= 32
    assert mode(tmp_path / "secret_key") == 0o600
    assert ("secret_key", 0o600) in file_modes.seen
    assert {file_mode for _name, file_mode in file_modes.seen} == {0o600}
    assert [path.name for path in tmp_path.iterdir()] == ["secret_key"]  # no temp file left


def test_a_created_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    Settings(data_dir=data_dir).signing_key()
    assert mode(tmp_path / "new") == 0o700
    assert mode(data_dir) == 0o700


# Each process reads lines of "<data dir> <start time>", waits for that moment (spinning, to
# wake up within microseconds of the others) and prints the key it got there.
_KEY_RACER = """
import sys
import time
from pathlib import Path

from storeroom.core.config import Settings

for line in sys.stdin:
    data_dir, start_at = line.split()
    while time.time() < float(start_at):
        pass
    try:
        key = Settings(data_dir=Path(data_dir)).signing_key()
    except Exception as exc:
        key = f"raised {exc!r}"
    print(key, flush=True)
"""


def test_processes_starting_together_share_one_complete_key(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("STOREROOM")}
    env["PYTHONPATH"] = str(Path(storeroom.__file__).parents[1])  # the code under test
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _KEY_RACER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for _ in range(4)
    ]
    try:
        for attempt in range(50):
            data_dir = tmp_path / f"attempt-{attempt}"
            start_at = time.time() + 0.01
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write(f"{data_dir} {start_at}\n")
                racer.stdin.flush()
            keys = set()
            for racer in racers:
                assert racer.stdout is not None
                keys.add(racer.stdout.readline().strip())
            assert len(keys) == 1, f"processes got different keys: {keys}"
            [key] = keys
            assert len(key) >= 32, f"a process got part of the key: {key!r}"
            assert (data_dir / "secret_key").read_text(encoding="utf-8") == key
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()


@pytest.mark.parametrize("loose_mode", [0o644, 0o640, 0o602], ids=oct)
def test_a_key_file_others_can_reach_stops_the_app(tmp_path: Path, loose_mode: int) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 64, encoding="utf-8")
    key_file.chmod(loose_mode)
    with pytest.raises(ConfigurationError, match=f"chmod 600 {key_file}"):
        create_app(Settings(data_dir=tmp_path))
    assert mode(key_file) == loose_mode  # the operator decides; nothing is changed behind them


def test_storeroom_serve_exits_2_on_a_key_file_others_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 64, encoding="utf-8")
    key_file.chmod(0o644)
    monkeypatch.setenv("STOREROOM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("STOREROOM_SECRET_KEY", raising=False)
    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(args))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["serve"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert f"chmod 600 {key_file}" in result.stderr
    assert served == []


def test_an_empty_key_file_stops_the_app(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.touch(mode=0o600)
    with pytest.raises(ConfigurationError, match=str(key_file)):
        create_app(Settings(data_dir=tmp_path))
