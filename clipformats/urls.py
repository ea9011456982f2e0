"""Which image URLs a stage may fetch: one check, used by `curation match` (rows dropped and counted) and
`curation download` (the URL counted as a failure, with the reason, and never opened).

By default only http and https: a caption table is hostile input, and `file://` would turn a local file into
a training sample (and `ftp://` or `data:` reach other readers). Other schemes only when asked for by name.
A URL must also have a host, no `user:password@` part, a valid port and bracket-balanced IPv6 literal, and
no whitespace or control characters. The reasons are fixed phrases (never the URL), so they can be counted.

Stdlib only.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

DEFAULT_SCHEMES = ("http", "https")


def allowed_schemes(extra: Iterable[str] = ()) -> frozenset[str]:
    """http and https plus the `extra` schemes (lower-cased)."""
    return frozenset(DEFAULT_SCHEMES) | {s.strip().lower().rstrip(":/") for s in extra}


def url_problem(url: object, schemes: Iterable[str] = DEFAULT_SCHEMES) -> str | None:
    """None for a URL that may be fetched, else why not (a short phrase without the URL itself)."""
    if not isinstance(url, str) or not url.strip():
        return "empty URL"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "whitespace or control character in URL"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises for a port that is not a number in 0..65535
    except ValueError:
        return "malformed URL (bad host or port)"
    scheme = parts.scheme.lower()
    if not scheme:
        return "no scheme"
    if scheme not in set(schemes):
        return f"scheme {scheme!r} not allowed (only {', '.join(sorted(schemes))}; see --allow_schemes)"
    if scheme == "file":
        return None if parts.path else "no path"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "credentials (user:password@) in URL"
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "port 0"
    return None
