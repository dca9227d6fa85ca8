"""famfs's shadow YAML: one small document per file, as famfs's CLI and famfs_fused read and write it.

famfs keeps the namespace of a FUSE mount in a *shadow tree*: a real directory per directory and a
YAML file per regular file.  The document (famfs ``famfs_emit_file_yaml`` and
``famfs_parse_shadow_yaml``, ``src/famfs_yaml.c`` at 5d0919f) is::

    ---
    file:
      path: <relpath>
      size: <bytes>
      flags: <n>
      mode: 0<octal>
      uid: <n>
      gid: <n>
      nextents: <n>
      simple_ext_list:            # or striped_ext_list: [{nstrips, chunk_size, simple_ext_list}]
      - devindex: 0
        offset: 0x<hex>
        length: 0x<hex>
    ...

famfs parses numbers with ``strtoull(s, 0, 0)`` (decimal, ``0x`` hex and ``0`` octal alike) and
reads at most 16384 bytes (``FAMFS_YAML_MAX``).  This module is pure code over bytes: :func:`emit`
writes that document, :func:`parse` reads it back (and what libyaml emits for it, whose sequences
may or may not be indented under their key) into a :class:`~daxmode.famfs.media.layout.FileMeta`.
Only the block subset famfs uses is accepted: mappings, sequences of mappings, plain and quoted
scalars; anything else is a :class:`ShadowYamlError` naming the line.  The bytes come from a
root-only directory but are still checked like media: a shadow file is a claim, and what it
claims is checked against the volume before a byte is served (daxmode.famfs.mount.shadow).
"""

from __future__ import annotations

import re

from daxmode.errors import FamfsError
from daxmode.famfs.media import layout as L

YAML_MAX = 16384
"""famfs_fused reads at most this many bytes of a shadow file (``FAMFS_YAML_MAX``)."""
_SIMPLE_KEYS = ("devindex", "offset", "length")
_FILE_KEYS = ("path", "size", "flags", "mode", "uid", "gid", "nextents")
_PLAIN_OK = re.compile(r"^[A-Za-z0-9_./+@%=,~][A-Za-z0-9_./+@%=,~ -]*$")


class ShadowYamlError(FamfsError):
    """A shadow file that is not a famfs file document; the message says where."""


# --- emitting -------------------------------------------------------------------------------------
def _scalar(s: str) -> str:
    """A YAML scalar for ``s``: plain where YAML would read it back unchanged, else double-quoted."""
    plain = (
        _PLAIN_OK.match(s) and not s.endswith(" ") and s not in ("~", "null", "true", "false", "yes", "no")
    )
    if plain and not re.fullmatch(r"[-+]?(?:0[xob]?)?[0-9a-fA-F_.]+", s):  # not read as a number
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:  # surrogateescape: a raw byte that was not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _extent_lines(extents: tuple[L.Extent, ...] | list[L.Extent], indent: str) -> list[str]:
    lines = []
    for dev, off, ln in extents:
        lines.append(f"{indent}- devindex: {dev}")
        lines.append(f"{indent}  offset: {off:#x}")
        lines.append(f"{indent}  length: {ln:#x}")
    return lines


def emit(meta: L.FileMeta) -> bytes:
    """The shadow document for a file (a played FILE entry, or a meta file's one extent)."""
    lines = [
        "---",
        "file:",
        f"  path: {_scalar(meta.path)}",
        f"  size: {meta.size}",
        f"  flags: {meta.flags}",
        f"  mode: 0{meta.mode & 0o7777:o}",
        f"  uid: {meta.uid}",
        f"  gid: {meta.gid}",
    ]
    if meta.interleaved:
        lines.append("  nextents: 1")
        lines.append("  striped_ext_list:")
        lines.append(f"  - nstrips: {meta.nstrips}")
        lines.append(f"    chunk_size: {meta.chunk_size:#x}")
        lines.append("    simple_ext_list:")
        lines += _extent_lines(meta.extents, "    ")
    else:
        lines.append(f"  nextents: {len(meta.extents)}")
        lines.append("  simple_ext_list:")
        lines += _extent_lines(meta.extents, "  ")
    lines.append("...")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


# --- parsing: a block-YAML subset -----------------------------------------------------------------
_Node = dict[str, object] | list[object] | str


def _unquote(v: str, lineno: int) -> str:
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1].replace("''", "'")
    if len(v) >= 2 and v[0] == v[-1] == '"':
        out = []
        i, body = 0, v[1:-1]
        while i < len(body):
            ch = body[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            nxt = body[i + 1 : i + 2]
            simple = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "0": "\0", "/": "/", " ": " "}
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
            elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2 : i + 4]):
                b = int(body[i + 2 : i + 4], 16)
                out.append(chr(b) if b < 0x80 else chr(0xDC00 + b))  # back to the raw byte
                i += 4
            else:
                raise ShadowYamlError(f"line {lineno}: unsupported escape in {v!r}")
        return "".join(out)
    if v[:1] in ("'", '"', "[", "{", "&", "*", "!", "|", ">"):
        raise ShadowYamlError(f"line {lineno}: unsupported YAML scalar {v!r}")
    return v


def _lines(text: str) -> list[tuple[int, int, str]]:
    """(line number, indent, content) of every meaningful line of the first document."""
    out: list[tuple[int, int, str]] = []
    started = False
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise ShadowYamlError(f"line {n}: tab in indentation")
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("%"):
            continue
        if s == "---" or s.startswith("--- "):
            if started:
                break
            started = True
            continue
        if s == "...":
            break
        started = True
        out.append((n, len(line) - len(line.lstrip(" ")), s))
    return out


def _split_key(s: str, lineno: int) -> tuple[str, str]:
    if s.startswith(('"', "'")):
        q = s[0]
        end = s.find(q, 1)
        while end > 0 and q == "'" and s[end + 1 : end + 2] == "'":
            end = s.find(q, end + 2)
        if end < 0 or s[end + 1 : end + 2] != ":":
            raise ShadowYamlError(f"line {lineno}: expected 'key: value', got {s!r}")
        return _unquote(s[: end + 1], lineno), s[end + 2 :].strip()
    key, sep, rest = s.partition(":")
    if not sep or (rest and not rest.startswith(" ")):
        raise ShadowYamlError(f"line {lineno}: expected 'key: value', got {s!r}")
    return key.strip(), rest.strip()


def _value(rest: str, lineno: int) -> str:
    if rest.startswith(("'", '"')):
        return _unquote(rest, lineno)
    if " #" in rest:
        rest = rest.split(" #", 1)[0].rstrip()
    return _unquote(rest, lineno)


class _Parser:
    def __init__(self, lines: list[tuple[int, int, str]]) -> None:
        self.lines = lines
        self.i = 0

    def node(self, indent: int) -> _Node:
        """The block node whose lines start at the current line (indented ``>= indent``)."""
        if self.i >= len(self.lines):
            raise ShadowYamlError("the document ends where a value was expected")
        _n, ind, s = self.lines[self.i]
        if ind < indent:
            raise ShadowYamlError(f"line {_n}: a value was expected here")
        if s == "-" or s.startswith("- "):
            return self.sequence(ind)
        return self.mapping(ind)

    def mapping(self, indent: int, first: str | None = None) -> dict[str, object]:
        out: dict[str, object] = {}
        while self.i < len(self.lines):
            n, ind, s = self.lines[self.i]
            if first is not None:
                s, first = first, None
            elif ind != indent:
                if ind > indent:
                    raise ShadowYamlError(f"line {n}: unexpected indentation")
                break
            elif s.startswith("- ") or s == "-":
                break
            key, rest = _split_key(s, n)
            if key in out:
                raise ShadowYamlError(f"line {n}: key {key!r} repeated")
            self.i += 1
            if rest:
                out[key] = _value(rest, n)
                continue
            nxt = self.lines[self.i] if self.i < len(self.lines) else None
            # A block sequence under a key may sit at the key's own indentation (libyaml emits it so).
            if nxt is not None and (nxt[1] > indent or (nxt[1] == indent and nxt[2].startswith("- "))):
                out[key] = self.node(nxt[1])
            else:
                out[key] = ""
        return out

    def sequence(self, indent: int) -> list[object]:
        out: list[object] = []
        while self.i < len(self.lines):
            n, ind, s = self.lines[self.i]
            if ind != indent or not (s.startswith("- ") or s == "-"):
                if ind > indent:
                    raise ShadowYamlError(f"line {n}: unexpected indentation")
                break
            body = s[2:].strip() if s != "-" else ""
            if not body:
                self.i += 1
                out.append(self.node(indent + 1))
                continue
            if ":" in body and (body.endswith(":") or ": " in body or body.startswith(('"', "'"))):
                # "- key: value" opens a mapping whose further keys sit two columns in.
                out.append(self.mapping(indent + 2, first=body))
            else:
                self.i += 1
                out.append(_value(body, n))
        return out


def parse_tree(data: bytes) -> dict[str, object]:
    """The document as nested dicts/lists/strings (the block subset described above)."""
    if len(data) > YAML_MAX:
        raise ShadowYamlError(f"{len(data)} bytes; famfs reads at most {YAML_MAX}")
    try:
        text = data.decode("utf-8", "surrogateescape")
    except UnicodeDecodeError as e:  # pragma: no cover - surrogateescape decodes any bytes
        raise ShadowYamlError(str(e)) from None
    lines = _lines(text)
    if not lines:
        raise ShadowYamlError("empty document")
    p = _Parser(lines)
    top = p.node(0)
    if p.i != len(lines):
        raise ShadowYamlError(f"line {lines[p.i][0]}: unexpected content after the document")
    if not isinstance(top, dict):
        raise ShadowYamlError("the document is not a mapping")
    return top


def _num(v: object, what: str, limit: int = 1 << 64) -> int:
    """strtoull(v, 0, 0) as famfs applies it, but strict: the whole string must be the number."""
    if not isinstance(v, str):
        raise ShadowYamlError(f"{what}: expected a number")
    s = v.strip()
    try:
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
            n = int(s, 16)
        elif re.fullmatch(r"0[0-7]+", s):
            n = int(s, 8)
        elif re.fullmatch(r"[0-9]+", s):
            n = int(s, 10)
        else:
            raise ValueError(s)
    except ValueError:
        raise ShadowYamlError(f"{what}: {v!r} is not a number") from None
    if n >= limit:
        raise ShadowYamlError(f"{what}: {n} is out of range")
    return n


def _simple_list(v: object, what: str, limit: int) -> list[L.Extent]:
    if not isinstance(v, list) or not v:
        raise ShadowYamlError(f"{what}: expected a non-empty list of extents")
    if len(v) > limit:
        raise ShadowYamlError(f"{what}: {len(v)} extents; famfs allows at most {limit}")
    out: list[L.Extent] = []
    for k, e in enumerate(v):
        if not isinstance(e, dict) or set(e) - set(_SIMPLE_KEYS) or not {"offset", "length"} <= set(e):
            raise ShadowYamlError(f"{what}[{k}]: expected devindex/offset/length")
        dev = _num(e.get("devindex", "0"), f"{what}[{k}].devindex", 1 << 32)
        out.append((dev, _num(e["offset"], f"{what}[{k}].offset"), _num(e["length"], f"{what}[{k}].length")))
    return out


def parse(data: bytes, index: int = -1) -> L.FileMeta:
    """A shadow file's claim as a FileMeta (``index`` -1: not from the log)."""
    top = parse_tree(data)
    f = top.get("file")
    if set(top) != {"file"} or not isinstance(f, dict):
        raise ShadowYamlError("expected one top-level key 'file'")
    unknown = set(f) - set(_FILE_KEYS) - {"simple_ext_list", "striped_ext_list"}
    if unknown:
        raise ShadowYamlError(f"unknown key {sorted(unknown)[0]!r}")
    missing = [k for k in ("path", "size", "mode") if k not in f]
    if missing:
        raise ShadowYamlError(f"missing key {missing[0]!r}")
    path = f["path"]
    if not isinstance(path, str):
        raise ShadowYamlError("path: expected a string")
    size = _num(f["size"], "size")
    flags = _num(f.get("flags", "0"), "flags", 1 << 32)
    mode = _num(f["mode"], "mode", 1 << 32)
    uid = _num(f.get("uid", "0"), "uid", 1 << 32)
    gid = _num(f.get("gid", "0"), "gid", 1 << 32)
    if mode & ~0o7777:
        raise ShadowYamlError(f"mode {mode:#o}: only permission bits are stored")
    has_simple, has_striped = "simple_ext_list" in f, "striped_ext_list" in f
    if has_simple == has_striped:
        raise ShadowYamlError("expected exactly one of simple_ext_list and striped_ext_list")
    if has_simple:
        exts = _simple_list(f["simple_ext_list"], "simple_ext_list", L.MAX_SIMPLE_EXTENTS)
        if "nextents" in f and _num(f["nextents"], "nextents") != len(exts):
            raise ShadowYamlError(f"nextents {f['nextents']} but {len(exts)} extents listed")
        return L.FileMeta(index, path, size, flags, uid, gid, mode, L.EXT_SIMPLE, tuple(exts))
    st = f["striped_ext_list"]
    if not isinstance(st, list) or len(st) != L.MAX_INTERLEAVED_EXTENTS or not isinstance(st[0], dict):
        raise ShadowYamlError("striped_ext_list: famfs stores exactly one interleaved extent")
    ie = st[0]
    if set(ie) != {"nstrips", "chunk_size", "simple_ext_list"}:
        raise ShadowYamlError("striped_ext_list[0]: expected nstrips, chunk_size and simple_ext_list")
    nstrips = _num(ie["nstrips"], "nstrips", L.MAX_STRIPS + 1)
    chunk = _num(ie["chunk_size"], "chunk_size")
    strips = _simple_list(ie["simple_ext_list"], "striped_ext_list[0].simple_ext_list", L.MAX_STRIPS)
    if nstrips != len(strips):
        raise ShadowYamlError(f"nstrips {nstrips} but {len(strips)} strips listed")
    return L.FileMeta(
        index, path, size, flags, uid, gid, mode, L.EXT_INTERLEAVE, tuple(strips), nstrips, chunk
    )


def region_meta(path: str, offset: int, length: int, mode: int) -> L.FileMeta:
    """The document famfs writes for a meta file (``.meta/.superblock``, ``.meta/.log``)."""
    return L.FileMeta(-1, path, length, 0, 0, 0, mode, L.EXT_SIMPLE, ((0, offset, length),))
