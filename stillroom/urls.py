"""Showing a URL safely: what goes into a message, a log line or a status page."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from stillroom.redact import redact_text


def public_url(url: str) -> str:
    """`url` without its user:password@ part, query string and fragment, where secrets ride
    (https://user:key@host/v1?api_key=... shows as https://host/v1)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an invalid URL)"
    if not parts.scheme or not host:
        return "(an invalid URL)"
    shown = f"[{host}]" if ":" in host else host
    if port is not None:
        shown += f":{port}"
    return urlunsplit((parts.scheme, shown, parts.path, "", ""))


_URL = re.compile(r"(?s)([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*@)?([^?#]*)(\?[^#]*)?(#.*)?")


def mask_url(value: str) -> str:
    """A URL with its userinfo, query and fragment shown as ****; other text redacted."""
    match = _URL.fullmatch(value.strip())
    if match is None:
        return redact_text(value)
    scheme, userinfo, rest, query, fragment = match.groups()
    return (
        f"{scheme}{'****@' if userinfo else ''}{redact_text(rest)}"
        f"{'?****' if query else ''}{'#****' if fragment else ''}"
    )
