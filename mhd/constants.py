"""Names both sides of the harness agree on: the host writes them into a guest's command lines and
environment, the guest looks for them.  One module at the bottom of the package, imported by both
``mhd.host`` and ``mhd.guest`` and importing nothing of theirs, so no two modules import each other
for a constant.  Stdlib only: the guest imports it at start-up, where every import costs ~50x.
"""

from __future__ import annotations

import os

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The checkout the harness runs from; guests see the same path (the host's root over 9p)."""

GUEST_DIR = os.path.join(PROJECT, "mhd", "guest")
"""Where the in-guest files that are not Python modules live (init.sh, stage2.sh)."""

AGENT_PORT = "mhd.agent"
"""virtio-serial port name the guest agent looks for in /sys/class/virtio-ports/*/name."""

AGENT_MODULE = "mhd.guest.agent"
"""What stage2.sh runs with the venv's python (``-m``)."""

GUEST_RUN = "/run/mhd"
GUEST_SHARE = "/run/mhd/share"
"""The per-host results directory as the guest mounts it (9p): guest.env, boot.times, junit files."""

BOOT_TIMES = GUEST_SHARE + "/boot.times"
"""``name uptime`` lines appended by init.sh, stage2.sh and the agent (the boot breakdown)."""

ZYGOTE_SOCKET = GUEST_RUN + "/warm.sock"
"""Where the guest's zygote listens for the in-guest tests' commands."""

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH in a guest, after the project's venv bin directory."""

SHARED_MEDIA = "shared_media"
"""pytest marker of guest tests that write the shared device's contents (run one host at a time)."""
