"""Sizes as users write them (``4096``, ``0x1000``, ``512M``, ``4GiB``) and as daxmode prints them."""

from __future__ import annotations

import re

from daxmode.errors import InvalidArgument

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([kmgtpKMGTP]?)(?:i?[bB])?\s*")


def parse_size(text: str | int, *, what: str = "size", positive: bool = False) -> int:
    """Bytes from an int or a string with binary suffixes (as daxctl); InvalidArgument otherwise."""
    if isinstance(text, bool):
        raise InvalidArgument(f"bad {what} {text!r}")
    if isinstance(text, int):
        n = text
    else:
        m = _SIZE.fullmatch(text)
        if not m:
            raise InvalidArgument(
                f"bad {what} {text!r}: expected bytes or a number with K/M/G/T (e.g. 4096, 8M, 1G)"
            )
        n = int(m.group(1), 0) * _UNITS[m.group(2).lower()]
    if n < 0 or (positive and n == 0):
        raise InvalidArgument(f"bad {what} {text!r}: must be {'positive' if positive else 'zero or more'}")
    return n


def human(n: int) -> str:
    """``512 MiB``, ``1.50 GiB``: what tables show."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.2f} {unit}"
    return f"{n} B"


def count(n: int, noun: str, plural: str = "") -> str:
    """``1 file``, ``2 files``: counts in messages read as English."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
