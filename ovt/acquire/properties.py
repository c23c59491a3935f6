"""A reader for Java `.properties` files, the format of Sweet Home 3D furniture catalogues.

Implements the parts of java.util.Properties.load that catalogues use: ISO-8859-1 text, `#`/`!` comments,
`=`, `:` or whitespace separators, backslash line continuations (leading whitespace of the next line dropped),
and the escapes `\\uXXXX`, `\\t`, `\\n`, `\\r`, `\\f` (any other escaped character stands for itself).
"""

from __future__ import annotations

import re

_SEPARATORS = "=: \t\f"


def _unescape(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\" or i + 1 == n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            hexdigits = text[i + 2 : i + 6]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", hexdigits):
                raise ValueError(f"malformed \\uXXXX escape: {text[i : i + 6]!r}")
            out.append(chr(int(hexdigits, 16)))
            i += 6
            continue
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
        i += 2
    # Java strings are UTF-16: \uD83D\uDE00 pairs must become one code point.
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")


def _logical_lines(text: str):
    """Join continuation lines: a line ending in an odd number of backslashes continues on the next."""
    buf = ""
    for raw in text.splitlines():
        line = raw.lstrip(" \t\f") if buf else raw
        if not buf and (not line.strip() or line.lstrip(" \t\f")[:1] in ("#", "!")):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            buf += line[:-1]
            continue
        yield (buf + line).lstrip(" \t\f")
        buf = ""
    if buf:
        yield buf.lstrip(" \t\f")


def _split_key(line: str) -> tuple[str, str]:
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c in _SEPARATORS:
            break
        i += 1
    key = line[:i]
    # "key = value", "key=value", "key : value", "key value": whitespace, then at most one = or :, then whitespace
    rest = line[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


def parse_properties(data: bytes | str) -> dict[str, str]:
    """Parse a .properties file (bytes are decoded as ISO-8859-1, as Java does) into an ordered dict."""
    text = data.decode("iso-8859-1") if isinstance(data, bytes) else data
    out: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split_key(line)
        out[_unescape(key)] = _unescape(value)
    return out
