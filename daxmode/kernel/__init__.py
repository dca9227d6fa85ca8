"""The kernel layer: the only code that names sysfs paths, like libdaxctl is for daxctl.

One small module per kernel concept, each offering reads and the primitives that change it
(and the writes a primitive would make, for ``--dry-run``):

* :mod:`~daxmode.kernel.devices`: dax devices and regions, naming and lookup, topology;
* :mod:`~daxmode.kernel.memory`: memory blocks, onlining/offlining, the auto-online policy;
* :mod:`~daxmode.kernel.drivers`: bind/unbind/new_id/remove_id and new_id's side effects;
* :mod:`~daxmode.kernel.regions`: sub-devices of dynamic regions (create, size, delete);
* :mod:`~daxmode.kernel.mounts`, :mod:`~daxmode.kernel.events`: who uses a device, waiting;
* :mod:`~daxmode.kernel.locks`, :mod:`~daxmode.kernel.journal`: the device and bus locks and
  the journal of a transition in flight, in the root-only ``/run/daxmode``.

Everything goes through a :class:`~daxmode.sysfs.Sysfs`, so a moved root (or the simulator
attached to one) moves all of it.
"""

from daxmode.kernel.devices import DaxDevice, Mode, Range, Region, find_devices, get_device, resolve_name
from daxmode.kernel.drivers import Action
from daxmode.kernel.locks import bus_lock, device_lock
from daxmode.kernel.memory import MemoryBlock, device_memory

__all__ = [
    "Action",
    "DaxDevice",
    "MemoryBlock",
    "Mode",
    "Range",
    "Region",
    "bus_lock",
    "device_lock",
    "device_memory",
    "find_devices",
    "get_device",
    "resolve_name",
]
