"""How a config file's problems become one line each (file, key, value), and how a file of an
older config version is brought up to this one."""

from __future__ import annotations

from typing import Any

from stillroom.errors import ConfigError

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


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
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
    return f"{_key_path(loc)}: {message} (got {show(value)})"
