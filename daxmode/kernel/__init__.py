"""The kernel layer: the only code that names sysfs paths, like libdaxctl is for daxctl.

One small module per kernel concept, each offering reads and the primitives that change it
(and the writes a primitive would make, for ``--dry-run``):

* :mod:`~daxmode.kernel.devices`: dax devices and regions, naming and lookup, topology;
* :mod:`~daxmode.kernel.memory`: memory blocks, onlining/offlining, the auto-online policy;
* :mod:`~daxmode.kernel.drivers`: bind/unbind/new_id/remove_id and new_id's side effects;
* :mod:`~daxmode.kernel.regions`: sub-devices of dynamic regions (create, size, delete);
* :mod:`~daxmode.kernel.mounts`, :mod:`~daxmode.kernel.events`: who uses a device, waiting;
* :mod:`~daxmode.kernel.features`, :mod:`~daxmode.kernel.procs`: what the running kernel offers,
  who holds a lock.

daxmode's own state (locks, the journal, mount records) is not a kernel object: it lives in
:mod:`daxmode.runstate`.

Everything goes through a :class:`~daxmode.sysfs.Sysfs`, so a moved root (or the simulator
attached to one) moves all of it.  This package file imports nothing, so a command loads
only the modules it uses.
"""
