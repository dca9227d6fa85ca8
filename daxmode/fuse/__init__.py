"""daxmode's own FUSE server machinery, on the raw ``/dev/fuse`` protocol.

Why not libfuse: its lowlevel API has no entry points for the famfs opcodes (GET_FMAP 54,
GET_DAXDEV 55) and no way to accept the ``FUSE_DAX_FMAP`` INIT flag; only famfs's own libfuse
fork passes them through.  The protocol is small, so it is written here in Python.

* :mod:`daxmode.fuse.proto` - the message codec, pure functions over bytes (``struct``);
* :mod:`daxmode.fuse.fmap` - the famfs GET_FMAP / GET_DAXDEV reply encodings (V10 wire format);
* :mod:`daxmode.fuse.kernel` - ``/dev/fuse``, ``mount(2)``/``umount2(2)`` through ctypes (root,
  no fusermount), the INIT probe;
* :mod:`daxmode.fuse.server` - the request loop: worker threads reading ``/dev/fuse``,
  dispatching to a file-system object, writing replies.

Facts (opcodes, struct layouts, flags) come from the kernel's ``include/uapi/linux/fuse.h`` (protocol
7.45) and the famfs fuse series V10 (linux-fsdevel/nvdimm, 2026-03-31, cover Message-ID
``20260331123702.35052-1-john@jagalactic.com``, patches 02-06); the code is ours.
"""
