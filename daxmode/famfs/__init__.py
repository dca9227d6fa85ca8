"""famfs metadata in Python, byte-compatible with famfs's own tools (versions 47 and 48).

``layout`` encodes and decodes the superblock, log header and entries; ``log`` validates and plays
the log; ``alloc`` is famfs's allocator; ``fsck`` checks everything; ``volume`` runs mkfs and the
master's mutations on a mapped medium (:mod:`daxmode.fsdev`); ``access`` gives applications
zero-copy views of famfs files without a famfs kernel.
"""

from daxmode.famfs.media.fsck import FsckReport, fsck
from daxmode.famfs.media.layout import DirMeta, FileMeta, FormatError, Superblock
from daxmode.famfs.media.volume import LogFull, NotMaster, Volume, mkfs, open_volume

__all__ = [
    "DirMeta",
    "FileMeta",
    "FormatError",
    "FsckReport",
    "LogFull",
    "NotMaster",
    "Superblock",
    "Volume",
    "fsck",
    "mkfs",
    "open_volume",
]
