"""Where a command action's `{path}` may go: the file's name comes from whoever made the
file, so it is only ever one whole argument, never the program and never code.

An argument after a shell's or an interpreter's code option (`sh -c`, `python -c`,
`perl -e`, `node --eval`, `osascript -e`, ...) is code; for PowerShell's `-Command` and
cmd's `/c` everything after it is. A name there would run as code, quotes or not. The file
goes after the code as an argument of its own: `[sh, -c, 'cat "$1"', sh, '{path}']`.
"""

from __future__ import annotations

import re

PLACEHOLDER = "{path}"

# Program -> the short option letters and long options whose argument is code.
_SHELL = ("c", ())
CODE_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    **dict.fromkeys(
        ("sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "busybox"),
        _SHELL,
    ),
    "python": ("c", ()),
    "pypy": ("c", ()),
    "perl": ("eE", ()),
    "ruby": ("e", ()),
    "node": ("ep", ("--eval", "--print")),
    "nodejs": ("ep", ("--eval", "--print")),
    "deno": ("", ("eval",)),
    "bun": ("e", ("--eval", "--print")),
    "osascript": ("e", ()),
    "php": ("rR", ()),
    "lua": ("e", ()),
    "luajit": ("e", ()),
}
# Program -> options after which every argument is code (joined into one command line).
REST_IS_CODE: dict[str, tuple[str, ...]] = {
    "powershell": ("-c", "-command", "-e", "-ec", "-encodedcommand", "/c", "/command"),
    "pwsh": ("-c", "-command", "-e", "-ec", "-encodedcommand", "/c", "/command"),
    "cmd": ("/c", "/k", "/r"),
}


def program(arg: str) -> str:
    """`/usr/bin/python3.11` -> `python`, `C:\\...\\PowerShell.exe` -> `powershell`."""
    name = re.split(r"[\\/]", arg)[-1].lower().removesuffix(".exe")
    return re.sub(r"[-\d.]+[mw]?$", "", name) or name


def problem(argv: list[str]) -> str | None:
    """What is wrong with where `{path}` stands in argv, or None."""
    if argv and PLACEHOLDER in argv[0]:
        return f"argv[0]: {PLACEHOLDER} may not be (part of) the program to run"
    for i, arg in enumerate(argv[1:], 1):
        if PLACEHOLDER in arg and arg != PLACEHOLDER:
            return (
                f"argv[{i}]: {PLACEHOLDER} must be a whole argument of its own, not part of {arg!r}"
            )
    # Any argument naming an interpreter starts its rules: `env sh -c`, `timeout 5 sh -c`
    # and `find -exec sh -c` wrap one.
    for i, arg in enumerate(argv):
        name = program(arg)
        if name in REST_IS_CODE:
            found = _rest_is_code(argv, i, name)
        elif name in CODE_OPTIONS:
            found = _code_argument(argv, i, name)
        else:
            continue
        if found is not None:
            return found
    return None


def _rest_is_code(argv: list[str], at: int, name: str) -> str | None:
    options = REST_IS_CODE[name]
    for j in range(at + 1, len(argv)):
        lowered = argv[j].lower()
        if lowered in options or (name == "cmd" and lowered[:2] in options):
            if PLACEHOLDER in argv[j + 1 :]:
                where = argv.index(PLACEHOLDER, j + 1)
                return (
                    f"argv[{where}]: {PLACEHOLDER} comes after {argv[j]} of {name}, where every"
                    " argument is run as code"
                )
            return None
    return None


def _code_argument(argv: list[str], at: int, name: str) -> str | None:
    letters, longs = CODE_OPTIONS[name]
    for j in range(at + 1, len(argv)):
        arg = argv[j]
        takes_code = arg in longs or (
            bool(letters)
            and arg.startswith("-")
            and not arg.startswith("--")
            and "=" not in arg
            and arg[-1] in letters
            and arg[1:].isalpha()
        )
        if takes_code and j + 1 < len(argv) and argv[j + 1] == PLACEHOLDER:
            return (
                f"argv[{j + 1}]: {PLACEHOLDER} is the code that {arg} of {name} runs; pass the"
                f" file after the code instead, e.g. [{name}, {arg}, 'cat \"$1\"', {name},"
                f" '{PLACEHOLDER}']"
                if name in ("sh", "bash", "zsh", "dash", "ksh", "mksh", "ash")
                else f"argv[{j + 1}]: {PLACEHOLDER} is the code that {arg} of {name} runs;"
                " pass the file after the code as an argument of its own"
            )
    return None
