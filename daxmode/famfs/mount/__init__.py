"""A famfs mount served by daxmode's own FUSE server.

``command`` is ``daxmode famfs mount``/``umount`` (checks, spawn, wait, recover); ``server`` is
the mount's server process; ``namespace`` the tree it serves, played from the log; ``handlers``
the FUSE handlers and the two data paths (copy, dax); ``metamap`` maps the medium through the
mount's meta files (the dax path, where the device cannot be mapped); ``spec`` what a mount is
made of; ``records`` what a server leaves under /run/daxmode.
"""
