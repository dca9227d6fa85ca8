"""The famfs medium: what is on the memory, read and written as bytes.

``layout`` is the on-media codec (pure functions over bytes); ``log`` validates and plays the log;
``alloc`` is famfs's allocator; ``fsck`` checks a medium; ``volume`` runs mkfs and the master's
mutations under the volume ``lock``; ``identity`` is this host's famfs system UUID; ``access``
and ``copy`` read and write file data through a mapping.  Nothing here mounts anything.
"""
