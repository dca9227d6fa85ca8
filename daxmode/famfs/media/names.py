"""File names from the log are hostile text: refuse control characters in new names, escape them
in listings.

famfs stores names as raw bytes, so a name may hold a newline (one file shows as two lines in
``famfs ls``) or a terminal escape (``ESC ]`` sequences retitle or rewrite a terminal).  Names
already on the media stay playable (famfs accepts them and they are valid Linux names), but every
listing prints them escaped, and no new name with one is written.
"""

from __future__ import annotations

import re

from daxmode.errors import InvalidArgument

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(name: str) -> bool:
    """True if ``name`` holds a C0/C1 control character or DEL."""
    return _CONTROL.search(name) is not None


def check_new_name(path: str, what: str = "path") -> None:
    """Refuse a name for a new entry that holds control characters (InvalidArgument, exit 11)."""
    m = _CONTROL.search(path)
    if m is not None:
        raise InvalidArgument(
            f"{what} {escape(path)}: holds control character {ord(m.group()):#04x}; famfs names may not"
        )


def escape(name: str) -> str:
    """A printable form of ``name``: control characters, backslashes and undecodable bytes as
    escapes (so one name is always one line, and nothing reaches the terminal raw)."""
    if not _CONTROL.search(name) and "\\" not in name and name.isprintable():
        return name
    out = []
    for ch in name:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # surrogateescape: a byte that was not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif _CONTROL.match(ch) or not ch.isprintable():
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)
