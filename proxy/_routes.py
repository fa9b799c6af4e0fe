"""The HTTP proxy's route table: request path -> (route, root_path, path), by longest prefix.

Pure logic, no I/O. The proxy compiles a `RouteTable` from its routes once, and swaps the
reference atomically when the routes change; a table is never mutated after `compile`, so
concurrent readers need no lock.

Invariants:

* Every prefix is valid: it starts with '/', has no empty segment ('//'), no '?', '#',
  '{' or '}', and does not end with '/' unless it is exactly '/'. So a non-root prefix is
  '/' + one or more non-empty segments joined by '/', and no segment contains '/'.
* Each prefix leads to exactly one target (a duplicate with the same target is dropped,
  with a different target it is an error).
* Matching is on whole path segments, compared exactly (case-sensitive, no decoding or
  normalisation): prefix '/a' matches '/a', '/a/' and '/a/c' but not '/ab'; the longest
  matching prefix wins; '/' matches every path that starts with '/'.
* For a match, `root_path` is the matched prefix ('' for '/') and `path` is the rest of
  the request path, never empty and always starting with '/': `root_path + path` is the
  request path, except for an exact match ('/a' -> root_path '/a', path '/').
* A path that does not start with '/' (including '') matches nothing.

Odd request paths are not normalised, and behave exactly as the string rule "prefix P
matches path X iff X == P or X starts with P + '/'" (for P != '/'):

* A trailing slash is an empty last segment: '/a/' matches '/a' with path '/', but does
  not match '/a/b'.
* Duplicated slashes are empty segments, which never equal a route segment: '/a//b'
  matches '/a' (path '//b', kept verbatim) but not '/a/b'; '//a' matches only '/'.
* '?', '#' and '%' are ordinary characters here (the caller strips the query string and
  chooses decoded or raw paths): '/a?x=1' does not match '/a'.

The compiled form is a trie of nested dicts keyed by segment, so `match` costs one dict
lookup per request-path segment up to the depth of the deepest route, whatever the length
of the request path: the split is bounded by that depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Match", "Route", "RouteTable", "validate_prefix"]


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the route table: requests under `prefix` go to `target`."""

    prefix: str  # e.g. "/", "/api", "/api/v1"
    target: str  # what the route leads to (a key the proxy's forwarder understands)
    name: str = ""  # how GET /-/routes shows the target (default: the target itself)


@dataclass(frozen=True, slots=True)
class Match:
    """The result of `RouteTable.match`: which route, and how it splits the request path."""

    route: Route
    root_path: str  # the matched prefix ("" for "/")
    path: str  # the rest of the path, always starting with "/"


# A trie node: (children keyed by path segment, the route ending at this node or None).
# Tuples, so that a lookup step is `children, route = node` with no attribute access.
_Node = tuple[dict[str, "_Node"], Route | None]


def validate_prefix(prefix: Any) -> str:
    """Return `prefix` if it is a valid route prefix; raise ValueError saying what to change."""
    if not isinstance(prefix, str):
        raise ValueError(f"route prefix must be a string such as '/api', got {prefix!r}")
    if not prefix.startswith("/"):
        problem = "must start with '/'"
    elif "?" in prefix or "#" in prefix:
        problem = "must not contain '?' or '#' (a query string or fragment is not part of a prefix)"
    elif "{" in prefix or "}" in prefix:
        problem = (
            "must not contain '{' or '}' (path parameters are not supported in prefixes: route the fixed "
            "part and read the rest of the path in the deployment)"
        )
    elif "//" in prefix:
        problem = "must not contain '//' (an empty segment)"
    elif prefix != "/" and prefix.endswith("/"):
        problem = "must not end with '/' (unless it is exactly '/')"
    else:
        return prefix
    raise ValueError(f"route prefix {prefix!r} {problem}: use {_suggest(prefix)!r}")


def _suggest(prefix: str) -> str:
    """A valid prefix close to the invalid `prefix`, for error messages."""
    head = prefix.split("?", 1)[0].split("#", 1)[0]
    segments: list[str] = []
    for segment in head.split("/"):
        if "{" in segment or "}" in segment:
            break
        if segment:
            segments.append(segment)
    return "/" + "/".join(segments)


class RouteTable:
    """Immutable; built once from routes, swapped atomically by its owner when routes change.

    `RouteTable.compile(routes)` (or `RouteTable(routes)`) validates and compiles;
    `RouteTable()` is the empty table, which matches nothing.
    """

    __slots__ = ("_maxsplit", "_routes", "_top")

    _maxsplit: int
    _routes: dict[str, Route]
    _top: dict[str, _Node]

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        by_prefix: dict[str, Route] = {}
        for route in routes:
            if not isinstance(route, Route):
                raise TypeError(f"RouteTable takes Route(prefix, target) values, got {route!r}")
            prefix = validate_prefix(route.prefix)
            if not isinstance(route.target, str) or not route.target:
                raise ValueError(f"route {prefix!r} needs a target name (a non-empty string), got {route.target!r}")
            seen = by_prefix.get(prefix)
            if seen is None:
                by_prefix[prefix] = route
            elif seen.target != route.target:
                raise ValueError(
                    f"route prefix {prefix!r} is given twice, to {seen.target!r} and to {route.target!r}: "
                    "each prefix must lead to exactly one target; change one of the prefixes"
                )

        # Insert shallow prefixes first: every node is created after all routes ending at
        # a shallower node are known, so a node's route is fixed when the node is made and
        # nodes can be tuples (only their child dicts are filled in afterwards).
        root: _Node = ({}, by_prefix.get("/"))
        depth = 0
        for prefix in sorted(by_prefix, key=lambda p: p.count("/")):
            if prefix == "/":
                continue
            segments = prefix[1:].split("/")
            depth = max(depth, len(segments))
            node = root
            for i, segment in enumerate(segments):
                children = node[0]
                child = children.get(segment)
                if child is None:
                    child = children[segment] = ({}, by_prefix[prefix] if i == len(segments) - 1 else None)
                node = child

        object.__setattr__(self, "_routes", {p: by_prefix[p] for p in sorted(by_prefix)})
        # The split of every path that starts with '/' begins with '' -> root.
        object.__setattr__(self, "_top", {"": root})
        # Splitting at most depth + 1 times yields '' and the first `depth` segments
        # intact; any further element is looked up below the deepest node (which has no
        # children), so it never matches whether or not it still holds a '/'.
        object.__setattr__(self, "_maxsplit", depth + 1)

    @classmethod
    def compile(cls, routes: Iterable[Route]) -> RouteTable:
        """Validate `routes` and compile them into a table.

        Raises ValueError naming the offending prefix (and what to change) for an invalid
        prefix or empty target, and naming both targets for a prefix given twice with
        different targets. A prefix given twice with the same target counts once.
        """
        return cls(routes)

    def match(self, path: str) -> Match | None:
        """The route with the longest prefix matching `path` on a segment boundary, or None."""
        if not path.startswith("/"):
            return None
        best: Route | None = None
        children = self._top
        for segment in path.split("/", self._maxsplit):
            node = children.get(segment)
            if node is None:
                break
            children, route = node
            if route is not None:
                best = route
        if best is None:
            return None
        root_path = best.prefix
        if root_path == "/":
            return Match(best, "", path)
        return Match(best, root_path, path[len(root_path) :] or "/")

    def routes(self) -> dict[str, str]:
        """{prefix: target name}, sorted by prefix (a new dict; for GET /-/routes)."""
        return {prefix: route.name or route.target for prefix, route in self._routes.items()}

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        return f"RouteTable({self.routes()!r})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"RouteTable is immutable; compile a new one instead of setting {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"RouteTable is immutable; cannot delete {name!r}")
