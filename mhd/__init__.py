"""mhd: the multi-headed-device QEMU harness behind ``qemu/cxl-mhd.sh`` (docs/harness.md).

It boots N guests that share one memory backing file (a CXL type-3 device per guest, or an
nvdimm), with the host's root read-only over 9p, and drives them through a small JSON-lines
agent on a virtio-serial port.

Layers, bottom up (tests/test_layering.py holds the harness to them):
  mhd.constants  names both sides agree on (guest paths, the agent's port, the marker);
  mhd.guest      runs inside the guests, stdlib only, never imports mhd.host;
  mhd.host       runs on the host; may use mhd.guest's pure parts (warm.preload_names);
  mhd.__main__   ``python -m mhd``.

The package is named ``mhd`` rather than ``qemu`` because ``qemu.qmp`` already owns the
``qemu`` namespace in the venv.
"""
