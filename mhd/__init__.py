"""mhd: the multi-headed-device QEMU harness behind ``qemu/cxl-mhd.sh``.

It boots N guests that share one memory backing file (a CXL type-3 device per guest, or an
nvdimm), with the host's root read-only over 9p, and drives them through a small JSON-lines
agent on a virtio-serial port.  Pure parts (command lines, kernel identification, argument
checks) live in their own modules so unit tests cover them without booting anything.

The package is named ``mhd`` rather than ``qemu`` because ``qemu.qmp`` already owns the
``qemu`` namespace in the venv.
"""
