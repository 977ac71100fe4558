"""How a key combination becomes a shortcut name, per platform, from key codes only.

A shortcut is named by the key code of the physical key (X keysym, Windows virtual key, macOS
key code), never by the character it produced, and only with names from a fixed set (a-z, 0-9,
f1-f24, tab, enter, arrows...). Alt, AltGr or Option alone with a letter, digit or space types
a character on many layouts, and so does Ctrl+Alt on Windows (it is AltGr there): not shortcuts.
"""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Mapping
from enum import Enum
from typing import Any

logger = logging.getLogger(__name__)

TRIGGERS = frozenset({"ctrl", "super"})  # with any key; Alt only with a non-character key
ORDER = ("ctrl", "alt", "super", "shift")  # the only modifier names a shortcut may hold

_NAMED_KEYS = frozenset(
    {
        *("tab", "enter", "space", "esc", "backspace", "delete", "insert", "home", "end"),
        *("page_up", "page_down", "up", "down", "left", "right", "print_screen", "menu"),
    }
)
# Keys that type text: with only Alt, AltGr or Option held they type a character.
CHARACTER_KEYS = frozenset([*string.ascii_lowercase, *string.digits, "space"])
KEY_NAMES = CHARACTER_KEYS | _NAMED_KEYS | {f"f{n}" for n in range(1, 25)}

_MODIFIERS = {
    "ctrl": "ctrl",
    "ctrl_l": "ctrl",
    "ctrl_r": "ctrl",
    "alt": "alt",
    "alt_l": "alt",
    "alt_r": "alt",
    "cmd": "super",
    "cmd_l": "super",
    "cmd_r": "super",
    "shift": "shift",
    "shift_l": "shift",
    "shift_r": "shift",
    "alt_gr": "altgr",
}
# X keysyms pynput passes as bare key codes: Meta is Alt with Shift held; ISO_Level3_Shift,
# Mode_switch and ISO_Level5_Shift choose a key's other characters, as AltGr does
# (https://www.x.org/releases/X11R7.7/doc/xproto/x11protocol.html#keysym_encoding).
_X_MODIFIERS = {
    0xFFE7: "alt",
    0xFFE8: "alt",
    0xFFEB: "super",
    0xFFEC: "super",
    0xFE03: "altgr",
    0xFF7E: "altgr",
    0xFE11: "altgr",
}
_X_NAMES = {
    0x20: "space",
    0xFF09: "tab",
    0xFE20: "tab",  # ISO_Left_Tab: Shift+Tab
    0xFF0D: "enter",
    0xFF8D: "enter",
    0xFF1B: "esc",
    0xFF08: "backspace",
    0xFFFF: "delete",
    0xFF63: "insert",
    0xFF50: "home",
    0xFF57: "end",
    0xFF55: "page_up",
    0xFF56: "page_down",
    0xFF51: "left",
    0xFF52: "up",
    0xFF53: "right",
    0xFF54: "down",
    0xFF61: "print_screen",
    0xFF67: "menu",
}
# Windows virtual-key codes (learn.microsoft.com/windows/win32/inputdev/virtual-key-codes).
_WIN_NAMES = {
    0x09: "tab",
    0x0D: "enter",
    0x1B: "esc",
    0x20: "space",
    0x08: "backspace",
    0x2E: "delete",
    0x2D: "insert",
    0x24: "home",
    0x23: "end",
    0x21: "page_up",
    0x22: "page_down",
    0x25: "left",
    0x26: "up",
    0x27: "right",
    0x28: "down",
    0x2C: "print_screen",
    0x5D: "menu",
}
# macOS key codes name a position on the ANSI keyboard (Carbon's Events.h, kVK_*).
_MAC_NAMES = {
    **dict(zip((0x00, 0x0B, 0x08, 0x02, 0x0E, 0x03, 0x05, 0x04, 0x22), "abcdefghi", strict=True)),
    **dict(zip((0x26, 0x28, 0x25, 0x2E, 0x2D, 0x1F, 0x23, 0x0C, 0x0F), "jklmnopqr", strict=True)),
    **dict(zip((0x01, 0x11, 0x20, 0x09, 0x0D, 0x07, 0x10, 0x06), "stuvwxyz", strict=True)),
    **dict(
        zip((0x1D, 0x12, 0x13, 0x14, 0x15, 0x17, 0x16, 0x1A, 0x1C, 0x19), "0123456789", strict=True)
    ),
    **{code: f"f{n}" for n, code in enumerate((0x7A, 0x78, 0x63, 0x76, 0x60, 0x61), 1)},
    **{code: f"f{n}" for n, code in enumerate((0x62, 0x64, 0x65, 0x6D, 0x67, 0x6F), 7)},
    **{code: f"f{n}" for n, code in enumerate((0x69, 0x6B, 0x71, 0x6A, 0x40, 0x4F), 13)},
    **{0x50: "f19", 0x5A: "f20"},
    **{0x30: "tab", 0x24: "enter", 0x4C: "enter", 0x35: "esc", 0x31: "space"},
    **{0x33: "backspace", 0x75: "delete", 0x73: "home", 0x77: "end", 0x74: "page_up"},
    **{0x79: "page_down", 0x7B: "left", 0x7C: "right", 0x7D: "down", 0x7E: "up"},
}


def shortcut(held: set[str], name: str | None, platform: str) -> str | None:
    """The shortcut `name` makes with the held modifiers, or None when it is none (or typing)."""
    if name is None or name not in KEY_NAMES:
        return None
    held = set(held)
    # AltGr, and Ctrl+Alt on Windows (which reads it as AltGr), choose another character.
    if "altgr" in held or (platform == "win32" and {"ctrl", "alt"} <= held):
        if name in CHARACTER_KEYS:
            return None
        held.discard("altgr")
    if not held & TRIGGERS and ("alt" not in held or name in CHARACTER_KEYS):
        return None  # Shift alone, or Alt/Option alone with a key that types
    return "+".join([*(m for m in ORDER if m in held), name])


def key_name(key: Any, platform: str, x_base: Mapping[int, int] | None = None) -> str | None:
    """The name of the physical key from its key code (one of KEY_NAMES), or None. The
    character it produced (pynput's `char`) is never read."""
    name: str | None
    if isinstance(key, Enum):  # pynput's Key: special keys, named the same on every platform
        name = key.name
    else:
        vk = getattr(key, "vk", None)  # pynput passes None for a key code it cannot map
        if not isinstance(vk, int) or isinstance(vk, bool):
            return None
        if platform == "win32":
            name = _vk_name(vk, 0x41, 0x30, 0x70, _WIN_NAMES)
        elif platform == "darwin":
            name = _MAC_NAMES.get(vk)
        else:
            keysym = (x_base or {}).get(vk, vk)
            name = _vk_name(keysym, 0x61, 0x30, 0xFFBE, _X_NAMES)
            if name is None and 0x41 <= keysym <= 0x5A:  # an upper-case letter's keysym
                name = chr(keysym + 0x20)
    return name if name in KEY_NAMES else None


def _vk_name(code: int, letters: int, digits: int, f1: int, names: Mapping[int, str]) -> str | None:
    """A letter, digit or function key where those codes run in order, else a named key."""
    if letters <= code < letters + 26:
        return chr(ord("a") + code - letters)
    if digits <= code < digits + 10:
        return chr(ord("0") + code - digits)
    if f1 <= code < f1 + 24:
        return f"f{code - f1 + 1}"
    return names.get(code)


def modifier(key: Any, platform: str) -> str | None:
    """ctrl, alt, super, shift or altgr for a modifier key (left and right merged), else None."""
    name = getattr(key, "name", None)
    if isinstance(name, str):
        return _MODIFIERS.get(name)
    vk = getattr(key, "vk", None)
    return _X_MODIFIERS.get(vk) if isinstance(vk, int) and platform.startswith("linux") else None


def x_base_keysyms() -> dict[int, int]:
    """Each keysym of the X keyboard mapping -> the keysym its key gives with no modifier:
    pynput reports the shifted keysym (Ctrl+Shift+1 as "exclam"), the shortcut its key."""
    try:
        from Xlib.display import Display

        connection = Display(os.environ.get("DISPLAY"))
        try:
            first = connection.display.info.min_keycode
            count = connection.display.info.max_keycode - first + 1
            mapping = connection.get_keyboard_mapping(first, count)
        finally:
            connection.close()
    except Exception as exc:  # Xlib raises its own types; keysyms are then named as they come
        logger.debug("input monitor: no X keyboard mapping: %s", exc)
        return {}
    rows = [[k for k in row if k] for row in mapping]
    base: dict[int, int] = {row[0]: row[0] for row in rows if row}
    for row in rows:
        for keysym in row[1:]:
            base.setdefault(keysym, row[0])
    return base
