"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS): lean
generation towards input that looks valid but once gave 500s, so that class stays closed.

- Every `date-time` may name an instant UTC cannot hold (9999-12-31T23:59:59-14:00).
- With STOREROOM_SCHEMATHESIS_NUL=1 (the PostgreSQL run, where NUL used to fail), half the
  generated bodies and query strings carry a NUL in one of their strings.
"""

import os
from datetime import date, time
from typing import Any

import schemathesis
from hypothesis import strategies as st

NUL = "\x00"
Path = tuple[Any, ...]


def _rfc3339(day: date, moment: time, offset: str) -> str:
    return f"{day.isoformat()}T{moment.isoformat()}{offset}"


def _offset(sign: str, minutes: int) -> str:
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _beyond_utc(day: date, moments: st.SearchStrategy[time], sign: str) -> st.SearchStrategy[str]:
    """`day` at a time that an offset of 12 hours or more pushes past the end of the calendar."""
    offsets = st.integers(12 * 60, 24 * 60 - 1).map(lambda minutes: _offset(sign, minutes))
    return st.builds(_rfc3339, st.just(day), moments, offsets)


# The instants UTC cannot hold come first, so the simplest value, which the coverage phase
# sends, is one of them (9999-12-31T12:00:00-12:00); fuzzing draws them half the time.
schemathesis.openapi.format(
    "date-time",
    st.one_of(
        _beyond_utc(date.max, st.times(min_value=time(12)), "-"),
        _beyond_utc(date.min, st.times(max_value=time(11, 59)), "+"),
        st.builds(
            _rfc3339,
            st.dates(),
            st.times(),
            st.just("Z") | st.builds(_offset, st.sampled_from("+-"), st.integers(0, 24 * 60 - 1)),
        ),
    ),
)


def _string_paths(value: Any, path: Path = ()) -> list[Path]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        parts: Any = value.items()
    elif isinstance(value, list):
        parts = enumerate(value)
    else:
        return []
    return [found for key, part in parts for found in _string_paths(part, (*path, key))]


def _at(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


def _replaced(value: Any, path: Path, new: Any) -> Any:
    """A copy of `value` with the part at `path` replaced by `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replaced(value[head], rest, new)
    return copy


def _with_nul(value: Any, path: Path, position: int) -> Any:
    text: str = _at(value, path)
    # In place of a character rather than added, so a length limit does not refuse it first.
    return _replaced(value, path, text[:position] + NUL + text[position + 1 :])


def _sometimes_with_nul(value: Any) -> st.SearchStrategy[Any]:
    paths = _string_paths(value)
    if not paths:
        return st.just(value)
    poisoned = st.sampled_from(paths).flatmap(
        lambda path: st.integers(0, max(len(_at(value, path)) - 1, 0)).map(
            lambda position: _with_nul(value, path, position)
        )
    )
    return st.just(value) | poisoned


if os.environ.get("STOREROOM_SCHEMATHESIS_NUL") == "1":

    @schemathesis.hook
    def flatmap_body(_context: Any, body: Any) -> st.SearchStrategy[Any]:
        return _sometimes_with_nul(body)

    @schemathesis.hook
    def flatmap_query(_context: Any, query: Any) -> st.SearchStrategy[Any]:
        return _sometimes_with_nul(query)
