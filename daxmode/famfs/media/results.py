"""What the volume commands did, typed, with one JSON form each (docs/json.md).

``source`` is always the medium (``/dev/daxX.Y`` or the image file), ``path`` a famfs path; a
``summary`` is the one line the command prints on success.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daxmode.famfs.media import layout as L
from daxmode.famfs.media.names import escape
from daxmode.sizes import count


@dataclass
class MkdirResult:
    source: str
    path: str
    created: list[str]
    """Directories logged, parents first (empty: it existed, with ``--parents``)."""
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.created:
            return f"{escape(self.path)} exists; unchanged"
        what = "directory" if len(self.created) == 1 else "directories"
        return f"created {what} {', '.join(escape(c) for c in self.created)}"

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "path": self.path, "created": self.created, "warnings": self.warnings}


@dataclass
class CreatResult:
    source: str
    file: L.FileMeta
    created: bool
    """False: a file of the same size was there and is kept."""
    warnings: list[str] = field(default_factory=list)
    seed: int | None = None
    """``creat -r``: the seed of the bytes written before the entry was logged."""

    def summary(self) -> str:
        if not self.created:
            return f"{escape(self.file.path)} exists with the same size; unchanged"
        filled = f", random bytes from seed {self.seed}" if self.seed is not None else ""
        return f"created {escape(self.file.path)} ({self.file.size} bytes{filled})"

    def to_json(self) -> dict[str, object]:
        return (
            self.file.to_dict()
            | {"source": self.source, "created": self.created, "warnings": self.warnings}
            | ({"seed": self.seed} if self.seed is not None else {})
        )


@dataclass(frozen=True)
class Copied:
    file: str
    """The local file."""
    path: str
    """Where it is in famfs."""
    size: int


@dataclass
class CopyResult:
    source: str
    dest: str
    copies: list[Copied]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if len(self.copies) == 1:
            c = self.copies[0]
            return f"{escape(c.file)} -> {escape(c.path)} ({c.size} bytes)"
        total = sum(c.size for c in self.copies)
        return f"copied {count(len(self.copies), 'file')} ({total} bytes) into {escape(self.dest)}"

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "dest": self.dest,
            "files": [{"file": c.file, "path": c.path, "size": c.size} for c in self.copies],
            "warnings": self.warnings,
        }
