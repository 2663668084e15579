"""Conditional requests: entity tags made from a row's version number."""

from dataclasses import dataclass


def format_etag(version: int) -> str:
    """Weak, because the same version may be sent with different encodings (e.g. gzip)."""
    return f'W/"{version}"'


@dataclass(frozen=True, slots=True)
class VersionMatch:
    """An If-Match / If-None-Match header, compared weakly: `*` matches any current version,
    otherwise one of the listed versions must be the current one. Tags we did not issue
    match nothing."""

    any: bool
    versions: frozenset[int]

    def matches(self, version: int) -> bool:
        return self.any or version in self.versions


def parse_etags(header: str) -> VersionMatch:
    if header.strip() == "*":
        return VersionMatch(any=True, versions=frozenset())
    versions = set()
    for raw in header.split(","):
        tag = raw.strip()
        tag = tag.removeprefix("W/")
        if len(tag) >= 2 and tag[0] == tag[-1] == '"':
            body = tag[1:-1]
            if body.isascii() and body.isdigit() and len(body) <= 10:
                versions.add(int(body))
    return VersionMatch(any=False, versions=frozenset(versions))
