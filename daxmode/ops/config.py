"""Desired device modes from files: /etc/daxmode.d/*.toml and daxctl's /etc/daxctl.conf.d/*.conf.

daxmode.d schema (one or more TOML files; docs/operations.md)::

    [[device]]                      # one table per rule
    match = { name = "dax0.0" }     # which devices (all given keys must match)
    mode = "fsdev"                  # devdax | fsdev (alias famfs) | system-ram
    online = true                   # system-ram only: online the memory (default true)
    movable = true                  # system-ram only: ZONE_MOVABLE (default) or ZONE_NORMAL
    force = false                   # allow offlining memory to leave system-ram

Match keys: ``name`` (``dax0.0``; shell globs such as ``dax1.*`` allowed), ``region``
(dax region id: ``1`` or ``"region1"``), ``namespace`` (nvdimm namespace name such as
``namespace0.0``, or a uuid: the namespace's own or the dax uuid ``ndctl list`` shows),
``cxl_region`` (``region0`` or the region uuid), ``size`` (bytes, or ``"4G"``).

Which rule wins when several match one device:

1. A rule whose ``name`` is the device's exact name beats every other rule.
2. Otherwise the rule with the most match keys wins.
3. Rules tied on 1-2 that ask for different settings are a conflict: the device is
   left alone and reported as failed, naming both file:line locations.
4. daxctl.conf.d sections are used only for devices no daxmode.d rule matches.

Paths are relative to the Sysfs root (``etc/daxmode.d``), so tests use temporary roots.
Reading these files is not sysfs I/O, so it happens here rather than in sysfs.py.

Run as root (udev runs ``apply`` as root), a directory or file that is not owned by root or is
writable by group or others is refused (exit 13): whoever can write it would choose the
modes of every device.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field

from daxmode.errors import BadMode, InvalidArgument, UnsafePath
from daxmode.kernel.devices import DeviceFacts, Mode
from daxmode.sizes import parse_size
from daxmode.sysfs import Sysfs

DAXMODE_DIR = "etc/daxmode.d"
DAXCTL_DIR = "etc/daxctl.conf.d"

MATCH_KEYS = ("name", "region", "namespace", "cxl_region", "size")
OPTION_KEYS = ("mode", "online", "movable", "force")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ConfigError(InvalidArgument):
    """A configuration file is malformed; the message starts with ``file:line:``."""

    def __init__(self, where: str, line: int | None, msg: str) -> None:
        self.where = where
        self.line = line
        super().__init__(f"{where}:{line}: {msg}" if line else f"{where}: {msg}")


@dataclass(frozen=True)
class Match:
    name: str | None = None
    region: int | None = None
    namespace: str | None = None
    cxl_region: str | None = None
    size: int | None = None

    @property
    def keys(self) -> int:
        return sum(getattr(self, k) is not None for k in MATCH_KEYS)

    @property
    def exact_name(self) -> bool:
        return self.name is not None and not any(c in self.name for c in "*?[")

    def matches(self, f: DeviceFacts) -> bool:
        if self.name is not None and not fnmatch.fnmatchcase(f.name, self.name):
            return False
        if self.region is not None and f.region_id != self.region:
            return False
        if self.namespace is not None:
            want = self.namespace.lower()
            if want not in {v for v in (f.namespace, f.namespace_uuid, f.nvdimm_uuid) if v}:
                return False
        if self.cxl_region is not None:
            want = self.cxl_region.lower()
            if want not in {v for v in (f.cxl_region, f.cxl_region_uuid) if v}:
                return False
        return not (self.size is not None and f.size != self.size)

    def describe(self) -> str:
        return " ".join(f"{k}={getattr(self, k)}" for k in MATCH_KEYS if getattr(self, k) is not None)


@dataclass(frozen=True)
class Entry:
    """One rule: which devices, and the mode (with options) they should be in."""

    match: Match
    mode: Mode
    source: str
    line: int
    online: bool = True
    movable: bool = True
    force: bool = False
    origin: str = "daxmode"

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def settings(self) -> tuple[object, ...]:
        return (self.mode, self.online, self.movable, self.force)

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.where,
            "origin": self.origin,
            "match": self.match.describe(),
            "mode": self.mode.value,
            "online": self.online,
            "movable": self.movable,
            "force": self.force,
        }


@dataclass
class Config:
    entries: list[Entry] = field(default_factory=list)
    daxctl: list[Entry] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class Conflict(InvalidArgument):
    """Equally specific rules ask for different settings for one device."""


def resolve(config: Config, facts: DeviceFacts) -> Entry | None:
    """The rule that applies to a device (module docstring: precedence), or None."""
    for entries in (config.entries, config.daxctl):
        hits = [e for e in entries if e.match.matches(facts)]
        if not hits:
            continue
        rank = max(_rank(e) for e in hits)
        best = [e for e in hits if _rank(e) == rank]
        first = best[0]
        for other in best[1:]:
            if other.settings() != first.settings():
                raise Conflict(
                    f"{facts.name}: conflicting rules {first.where} (mode {first.mode.value}) and "
                    f"{other.where} (mode {other.mode.value}); make one more specific"
                )
        return first
    return None


def _rank(e: Entry) -> tuple[int, int]:
    return (1 if e.match.exact_name else 0, e.match.keys)


# --- daxmode.d (TOML) ------------------------------------------------------------------------------


def check_trusted(path: str, shown: str) -> None:
    """As root, refuse a configuration path that another user owns or can write (symlinks are
    judged by their target, which is what gets read)."""
    if os.geteuid() != 0:
        return
    st = os.stat(path)
    if st.st_uid != 0:
        raise UnsafePath(f"{shown} is owned by uid {st.st_uid}, not root; refusing to apply it as root")
    if st.st_mode & 0o022:
        raise UnsafePath(
            f"{shown} is writable by group or others (mode {st.st_mode & 0o7777:04o}); refusing it"
        )


def _conf_files(sysfs: Sysfs, rel_dir: str, suffix: str) -> list[tuple[str, str]]:
    """(shown path, real path) of regular files ending in ``suffix``, in C-locale order (alphasort)."""
    base = sysfs.path(rel_dir)
    try:
        names = sorted(os.listdir(base), key=lambda s: s.encode())
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError(sysfs.shown(rel_dir), None, f"cannot list: {e.strerror}") from None
    check_trusted(str(base), sysfs.shown(rel_dir))
    out = []
    for n in names:
        real = base / n
        if n.endswith(suffix) and not n.startswith(".") and n != suffix and real.is_file():
            shown = sysfs.shown(f"{rel_dir}/{n}")
            check_trusted(str(real), shown)
            out.append((shown, str(real)))
    return out


def _read_text(shown: str, real: str) -> str:
    try:
        with open(real, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(shown, None, f"not UTF-8 text: {e.reason}") from None
    except OSError as e:
        raise ConfigError(shown, None, f"cannot read: {e.strerror}") from None


def load(sysfs: Sysfs, *, daxctl: bool = True) -> Config:
    """Every rule from daxmode.d, plus daxctl.conf.d sections unless ``daxctl`` is False."""
    cfg = Config()
    for shown, real in _conf_files(sysfs, DAXMODE_DIR, ".toml"):
        cfg.entries.extend(parse_toml(_read_text(shown, real), shown))
        cfg.files.append(shown)
    if daxctl:
        files = [(shown, _read_text(shown, real)) for shown, real in _conf_files(sysfs, DAXCTL_DIR, ".conf")]
        cfg.daxctl.extend(parse_daxctl(files))
        cfg.files.extend(shown for shown, _ in files)
    return cfg


_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


def parse_toml(text: str, source: str) -> list[Entry]:
    """Rules from one daxmode.d file; any error names the file and line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_LINE.search(msg)
        line = int(m.group(1)) if m else None
        raise ConfigError(source, line, f"TOML syntax: {_TOML_LINE.sub('', msg).strip()}") from None
    lines = text.splitlines()
    for key in doc:
        if key != "device":
            raise ConfigError(
                source,
                _key_line(lines, key, 0, len(lines)),
                f"unknown top-level key {key!r} (expected [[device]])",
            )
    tables = doc.get("device", [])
    if not isinstance(tables, list):
        raise ConfigError(
            source, _key_line(lines, "device", 0, len(lines)), "'device' must be an array of tables"
        )
    spans = _device_spans(lines, len(tables))
    return [_entry(t, source, lines, span) for t, span in zip(tables, spans, strict=True)]


def _device_spans(lines: list[str], count: int) -> list[tuple[int, int]]:
    """0-based [start, end) line spans of each [[device]] table, best effort for inline arrays."""
    starts = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*device\s*\]\]", ln)]
    if len(starts) == count:
        ends = [*starts[1:], len(lines)] if starts else []
        for j, s in enumerate(starts):
            # a following non-device [table] header ends this one too
            for k in range(s + 1, ends[j]):
                if re.match(r"\s*\[(?!\s*device[.\]])", lines[k]):
                    ends[j] = k
                    break
        return list(zip(starts, ends, strict=True))
    # `device = [ {...}, ... ]`: point at the array itself.
    at = _key_line(lines, "device", 0, len(lines))
    s = (at or 1) - 1
    return [(s, len(lines))] * count


def _key_line(lines: list[str], key: str, start: int, end: int) -> int | None:
    """1-based line of ``key =`` (also ``match.key =`` or inside an inline table) within a span."""
    pat = re.compile(rf"(^|[\s{{,.]){re.escape(key)}\s*=")
    for i in range(start, min(end, len(lines))):
        if pat.search(lines[i].split("#", 1)[0]):
            return i + 1
    return None


def _entry(t: object, source: str, lines: list[str], span: tuple[int, int]) -> Entry:
    start, end = span
    line = start + 1

    def err(msg: str, key: str | None = None) -> ConfigError:
        at = _key_line(lines, key, start, end) if key else None
        return ConfigError(source, at or line, msg)

    if not isinstance(t, dict):
        raise err("each [[device]] must be a table")
    for k in t:
        if k not in (*OPTION_KEYS, "match"):
            hint = " (match keys go in match = { ... })" if k in MATCH_KEYS else ""
            raise err(f"unknown key {k!r} in [[device]]{hint}; known: match, {', '.join(OPTION_KEYS)}", k)
    m = t.get("match")
    if not isinstance(m, dict) or not m:
        raise err(f"[[device]] needs a non-empty match table with any of: {', '.join(MATCH_KEYS)}", "match")
    for k in m:
        if k not in MATCH_KEYS:
            raise err(f"unknown match key {k!r}; known: {', '.join(MATCH_KEYS)}", k)
    match = Match(
        name=_match_name(m, err),
        region=_match_region(m, err),
        namespace=_match_str(m, "namespace", err),
        cxl_region=_match_str(m, "cxl_region", err),
        size=_match_size(m, err),
    )
    if "mode" not in t:
        raise err("[[device]] needs mode = devdax | fsdev | system-ram")
    if not isinstance(t["mode"], str):
        raise err("mode must be a string: devdax, fsdev or system-ram", "mode")
    try:
        mode = Mode.parse(t["mode"])
    except BadMode as e:
        raise err(str(e), "mode") from None
    opts: dict[str, bool] = {}
    for k in ("online", "movable", "force"):
        if k in t:
            if not isinstance(t[k], bool):
                raise err(f"{k} must be true or false", k)
            opts[k] = t[k]
    if mode is not Mode.SYSTEM_RAM:
        for k in ("online", "movable"):
            if k in opts:
                raise err(f"{k} only applies to mode system-ram", k)
    return Entry(
        match=match,
        mode=mode,
        source=source,
        line=line,
        online=opts.get("online", True),
        movable=opts.get("movable", True),
        force=opts.get("force", False),
    )


_Err = Callable[..., ConfigError]
"""Builds the error for one key of one rule (``err(msg, key)``)."""


def _match_name(m: dict[str, object], err: _Err) -> str | None:
    v = m.get("name")
    if v is None:
        return None
    if not isinstance(v, str) or not re.fullmatch(r"(/dev/)?dax[0-9*?\[\]\-.!]+", v):
        raise err(
            f"match.name must be a device name such as dax0.0 or a glob such as dax1.*, not {v!r}", "name"
        )
    return os.path.basename(v)


def _match_region(m: dict[str, object], err: _Err) -> int | None:
    v = m.get("region")
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and re.fullmatch(r"(region)?\d+", v):
        return int(v.removeprefix("region"))
    raise err(f'match.region must be a dax region id such as 1 or "region1", not {v!r}', "region")


def _match_str(m: dict[str, object], key: str, err: _Err) -> str | None:
    v = m.get(key)
    if v is None:
        return None
    pattern = r"namespace\d+\.\d+" if key == "namespace" else r"region\d+"
    if isinstance(v, str) and (re.fullmatch(pattern, v) or _UUID.match(v)):
        return v.lower()
    example = "namespace0.0" if key == "namespace" else "region0"
    raise err(f"match.{key} must be a name such as {example} or a uuid, not {v!r}", key)


def _match_size(m: dict[str, object], err: _Err) -> int | None:
    v = m.get("size")
    if v is None:
        return None
    try:
        if not isinstance(v, (int, str)):
            raise InvalidArgument(f"bad size {v!r}")
        return parse_size(v)
    except InvalidArgument as e:
        raise err(f"match.size: {e}", "size") from None


# --- daxctl.conf.d (ini, read the way daxctl v81 reads it) -----------------------------------------

DAXCTL_SECTION = "reconfigure-device"


@dataclass
class _IniSection:
    name: str
    line: int
    values: dict[str, tuple[str, int]] = field(default_factory=dict)


def _parse_ini(text: str, source: str) -> list[_IniSection]:
    """iniparser's rules: [section] and key = value lines, names lower-cased, ';'/'#' comments,
    quoted values kept verbatim, unquoted ones cut at ';' or '#'; anything else is a syntax error
    (iniparser_load fails and daxctl reports "error parsing config file")."""
    sections: dict[str, _IniSection] = {}
    current: _IniSection | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and "]" in line:
            name = line[1 : line.index("]")].strip().lower()
            current = sections.setdefault(name, _IniSection(name, no))
            continue
        if "=" not in line:
            raise ConfigError(
                source, no, f"syntax error: expected [section] or key = value, got {raw.strip()!r}"
            )
        key, _, rest = line.partition("=")
        key = key.strip().lower()
        rest = rest.strip()
        if len(rest) >= 2 and rest[0] in "\"'" and rest[0] in rest[1:]:
            value = rest[1 : rest.index(rest[0], 1)]
        else:
            value = re.split(r"[;#]", rest, maxsplit=1)[0].strip()
        if current is None:
            continue  # keys before any section belong to iniparser's global section; daxctl never reads them
        current.values[key] = (value, no)
    return list(sections.values())


def _daxctl_bool(text: str) -> bool | None:
    """daxctl's conf_string_to_bool: decided by the first character only."""
    if text[:1] in ("t", "T", "y", "Y", "1"):
        return True
    if text[:1] in ("f", "F", "n", "N", "0"):
        return False
    return None


def parse_daxctl(files: list[tuple[str, str]]) -> list[Entry]:
    """Entries for each nvdimm.uuid in ``[reconfigure-device NAME]`` sections.

    ``files`` is [(shown path, text)] in alphasort order.  daxctl walks the files last
    to first; in each file only the first section carrying the uuid counts, and values
    for one key found in several files are joined with a space.  So a mode given in two
    files becomes e.g. "devdax system-ram", which daxctl rejects; we report it with both
    locations.  online/movable are judged by their first character, so the value from
    the alphabetically last file wins for them.
    """
    parsed = [(src, _parse_ini(text, src)) for src, text in files]
    uuids: list[str] = []
    for _, sections in parsed:
        for s in sections:
            if s.name.split()[:1] == [DAXCTL_SECTION] and "nvdimm.uuid" in s.values:
                u = s.values["nvdimm.uuid"][0]
                if u not in uuids:
                    uuids.append(u)
    out = []
    for u in uuids:
        joined: dict[str, list[tuple[str, str, int]]] = {"mode": [], "online": [], "movable": []}
        first_at: tuple[str, int] | None = None
        for src, sections in reversed(parsed):
            sec = next(
                (
                    s
                    for s in sections
                    if s.name.split()[:1] == [DAXCTL_SECTION] and s.values.get("nvdimm.uuid", ("",))[0] == u
                ),
                None,
            )
            if sec is None:
                continue
            first_at = first_at or (src, sec.line)
            for k, lst in joined.items():
                if k in sec.values:
                    v, no = sec.values[k]
                    lst.append((v, src, no))
        assert first_at is not None
        out.append(_daxctl_entry(u, joined, first_at))
    return out


def _daxctl_entry(uuid: str, joined: dict[str, list[tuple[str, str, int]]], at: tuple[str, int]) -> Entry:
    src, line = at
    if not _UUID.match(uuid):
        raise ConfigError(src, line, f"nvdimm.uuid {uuid!r} is not a uuid")
    modes = joined["mode"]
    if not modes:
        raise ConfigError(
            src, line, f"section for nvdimm.uuid {uuid} has no mode (daxctl: a 'mode' option is required)"
        )
    text = " ".join(v for v, _, _ in modes)
    if len(modes) > 1:
        where = ", ".join(f"{s}:{n}" for _, s, n in modes)
        raise ConfigError(
            modes[0][1],
            modes[0][2],
            f"mode for nvdimm.uuid {uuid} is set in several files ({where}); daxctl reads {text!r}",
        )
    _, msrc, mline = modes[0]
    try:
        mode = Mode.parse(text)
    except BadMode as e:
        raise ConfigError(msrc, mline, str(e)) from None
    opts: dict[str, bool] = {}
    for k in ("online", "movable"):
        if joined[k]:
            val = _daxctl_bool(" ".join(v for v, _, _ in joined[k]))
            if val is None:
                _, ksrc, kline = joined[k][0]
                raise ConfigError(ksrc, kline, f"{k} must start with t/y/1 or f/n/0 (daxctl boolean)")
            opts[k] = val
    return Entry(
        match=Match(namespace=uuid.lower()), mode=mode, source=src, line=line, origin="daxctl", **opts
    )
