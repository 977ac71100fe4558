"""How a config file's problems become one line each (file, key, value), how a file of an
older config version is brought up to this one, and how a config is shown without its secrets."""

from __future__ import annotations

import re
from typing import Any

from stillroom.errors import ConfigError
from stillroom.redact import is_secret_key, redact_text
from stillroom.urls import mask_url

CONFIG_VERSION = 1


# Config migrations: MIGRATIONS[n] turns a version-n mapping into version n+1.
MIGRATIONS: dict[int, Any] = {}


def migrate(data: dict[str, Any], path: object) -> dict[str, Any]:
    version = data.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(path, [f"version: must be a whole number >= 1 (got {show(version)})"])
    if version > CONFIG_VERSION:
        raise ConfigError(
            path,
            [f"version: {version} is newer than this stillroom reads ({CONFIG_VERSION}); upgrade"],
        )
    while version < CONFIG_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["version"] = version
    return data


def show(value: Any, key: str = "") -> str:
    """A value as an error message quotes it: secrets masked first, then cut to 60 characters."""
    text = repr(public(value, key))
    return text if len(text) <= 60 else text[:57] + "..."


def public(value: Any, key: str = "", _seen: frozenset[int] = frozenset()) -> Any:
    """Config data safe to print: the values of secret-named keys masked, URLs without their
    userinfo and query, and every other text with its recognisable secrets redacted."""
    if isinstance(value, dict | list | tuple):
        if id(value) in _seen:  # YAML anchors can make a structure hold itself
            return "[...]"
        seen = _seen | {id(value)}
        if isinstance(value, dict):
            return {k: public(v, str(k), seen) for k, v in value.items()}
        return [public(v, key, seen) for v in value]
    if isinstance(value, str):
        if key and is_secret_key(key):
            return mask_secret(value)
        return mask_url(value) if "://" in value else redact_text(value)
    return value


def mask_secret(value: str) -> str:
    """A key as `sk-…abcd` (its kind and last four characters), or **** when it is short."""
    if len(value) < 16:
        return "****"
    prefix = re.match(r"[A-Za-z]{2,5}[-_]", value)
    return f"{prefix[0] if prefix else ''}…{value[-4:]}"


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        name = redact_text(str(part))  # a key pasted in the wrong place is a key too
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out or "(top level)"


ACTION_KINDS = ("move", "rename", "copy", "convert_image", "command")


def _clean_loc(raw: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's own loc parts: validator names and the union tag after `action`."""
    loc: list[int | str] = []
    for part in raw:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if loc and loc[-1] == "action" and part in ACTION_KINDS:
            continue
        loc.append(part)
    return tuple(loc)


def describe(err: Any) -> str:
    loc = _clean_loc(err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "union_tag_invalid":
        allowed = err["ctx"]["expected_tags"].replace("'", "")
        return f"{_key_path((*loc, 'kind'))}: {show(err['ctx']['tag'])} is not one of {allowed}"
    if kind == "union_tag_not_found":
        return f"{_key_path(loc)}: missing key 'kind'"
    if kind == "extra_forbidden":
        return f"{_key_path(loc)}: unknown key"
    if kind == "missing":
        return f"{_key_path(loc)}: missing"
    message = err["msg"].removeprefix("Value error, ")
    secret = any(isinstance(part, str) and is_secret_key(part) for part in loc)
    return f"{_key_path(loc)}: {message} (got {'****' if secret else show(value)})"
