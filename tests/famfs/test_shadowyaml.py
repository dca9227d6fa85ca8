"""famfs's shadow YAML: what daxmode writes reads back identical, famfs's libyaml output parses, and
documents that are not famfs file documents are refused with the line named."""

from __future__ import annotations

import pytest

from daxmode.famfs.media import layout as L
from daxmode.famfs.mount import rest
from daxmode.famfs.mount import shadowyaml as Y

MiB = 1 << 20

SIMPLE = L.FileMeta(-1, "dir/file.bin", 5000, 2, 1000, 100, 0o640, L.EXT_SIMPLE, ((0, 12 * MiB, 2 * MiB),))
STRIPED = L.FileMeta(
    -1,
    "s",
    9 * MiB,
    2,
    0,
    0,
    0o600,
    L.EXT_INTERLEAVE,
    ((0, 64 * MiB, 6 * MiB), (0, 128 * MiB, 4 * MiB)),
    2,
    2 * MiB,
)

# What libyaml's emitter writes for famfs_emit_file_yaml (block style, sequences not indented under
# their key), checked against famfs's own shadow files on a mount.
LIBYAML = b"""---
file:
  path: a/b
  size: 3145728
  flags: 2
  mode: 0644
  uid: 0
  gid: 0
  nextents: 1
  simple_ext_list:
  - devindex: 0
    offset: 0x1000000
    length: 0x400000
...
"""


@pytest.mark.parametrize(
    "meta", [SIMPLE, STRIPED, SIMPLE._replace(path="we:ird #name"), SIMPLE._replace(path="0x10")]
)
def test_emit_parse_round_trip(meta: L.FileMeta) -> None:
    doc = Y.emit(meta)
    assert doc.startswith(b"---\nfile:\n") and doc.endswith(b"...\n")
    assert Y.parse(doc) == meta


def test_non_utf8_names_round_trip() -> None:
    meta = SIMPLE._replace(path=b"caf\xe9/\x01x".decode("utf-8", "surrogateescape"))
    assert Y.parse(Y.emit(meta)) == meta


def test_libyaml_layouts_parse() -> None:
    m = Y.parse(LIBYAML)
    assert (m.path, m.size, m.mode, m.extents) == ("a/b", 3 * MiB, 0o644, ((0, 16 * MiB, 4 * MiB),))
    indented = LIBYAML.replace(b"  - devindex", b"    - devindex").replace(b"    offset", b"      offset")
    indented = indented.replace(b"    length", b"      length")
    assert Y.parse(indented) == m
    assert Y.parse(LIBYAML.replace(b"size: 3145728", b"size: 0x300000")).size == 3 * MiB
    assert Y.parse(LIBYAML.replace(b"path: a/b", b"path: 'a/b'")).path == "a/b"


@pytest.mark.parametrize(
    "change,why",
    [
        ((b"nextents: 1", b"nextents: 2"), "nextents"),
        ((b"size: 3145728", b"size: 12abc"), "not a number"),
        ((b"size: 3145728", b"size: -1"), "not a number"),
        ((b"mode: 0644", b"mode: 0100644"), "permission bits"),
        ((b"  flags: 2\n", b"  flags: 2\n  extra: 1\n"), "unknown key"),
        ((b"  path: a/b\n", b""), "missing key 'path'"),
        ((b"offset: 0x1000000", b"offset: [1, 2]"), "unsupported"),
        ((b"  size: 3145728\n", b"  size: 1\n  size: 2\n"), "repeated"),
        ((b"file:", b"files:"), "one top-level key"),
        ((b"  - devindex: 0\n", b"  - devindex: 0\n      bad: indent\n"), "indentation"),
        ((b"offset: 0x1000000", b"offset: 0x10000000000000000"), "out of range"),
    ],
)
def test_refused_documents(change: tuple[bytes, bytes], why: str) -> None:
    bad = LIBYAML.replace(*change)
    assert bad != LIBYAML
    with pytest.raises(Y.ShadowYamlError, match=why):
        Y.parse(bad)


def test_size_limit_and_empty() -> None:
    with pytest.raises(Y.ShadowYamlError, match="16384"):
        Y.parse(LIBYAML + b"#" * Y.YAML_MAX)
    with pytest.raises(Y.ShadowYamlError, match="empty"):
        Y.parse(b"---\n...\n")


def test_too_many_extents_and_strip_count() -> None:
    many = L.FileMeta(
        -1, "m", 1, 2, 0, 0, 0o644, L.EXT_SIMPLE, tuple((0, i * 2 * MiB, 2 * MiB) for i in range(17))
    )
    with pytest.raises(Y.ShadowYamlError, match="at most 16"):
        Y.parse(Y.emit(many))
    with pytest.raises(Y.ShadowYamlError, match="nstrips 3"):
        Y.parse(Y.emit(STRIPED._replace(nstrips=3)))


def test_rest_requests() -> None:
    st = rest.RestState(inodes=lambda: (5, 1))
    st.looked_up(True)
    st.looked_up(False)
    assert rest.parse_request(b"GET /icache_stats HTTP/1.1\r\nHost: x\r\n") is None  # incomplete
    req = rest.parse_request(b"GET /icache_stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert req == ("GET", "/icache_stats", b"")
    code, _ctype, body = rest.respond(st, *req, log=lambda m: None)
    assert code == 200 and "search_count:   2" in body and "search_fail_ct: 1" in body
    post = rest.parse_request(b"POST /log_level HTTP/1.1\r\nContent-Length: 7\r\n\r\nlevel=3")
    assert post is not None and rest.respond(st, *post, log=lambda m: None)[0] == 200 and st.log_level == 3
    assert rest.respond(st, "DELETE", "/icache_stats", b"", log=lambda m: None)[0] == 405
    assert (
        rest.respond(st, "GET", "/inodes", b"", log=lambda m: None)[2]
        == "inodes:\n  total: 5\n  pending: 1\n"
    )
    for bad in (
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ):
        with pytest.raises(ValueError):
            rest.parse_request(bad)
