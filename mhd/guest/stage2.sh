#!/bin/sh
# Second stage of a harness guest's boot, PID 1 on the overlay root (see init.sh): start udevd when
# wanted so /dev nodes, symlinks and pyudev events behave as on a real machine, then run the guest
# agent.  Coldplug is limited to the subsystems the tests touch: a full `udevadm trigger` loads ~40
# modules and runs every rule, which took 75 s under TCG (boot-to-ready 16 s -> 93 s).  Devices added
# later (dax, memory blocks, regions) get their events from the running udevd as usual.  Then the
# guest agent runs with the host venv's python.  When the agent exits (poweroff request) the guest powers off.
. /run/mhd/share/guest.env
export PATH="$MHD_PATH" HOME=/root LANG=C.UTF-8
say() { echo "mhd-stage2: $*" >/dev/console; }
mark() { echo "$1 $(cut -d' ' -f1 /proc/uptime)" >>/run/mhd/share/boot.times; }
mark stage2

if [ "$MHD_UDEV" = 1 ] && [ -x /lib/systemd/systemd-udevd ]; then
    if /lib/systemd/systemd-udevd --daemon --resolve-names=never >/dev/null 2>&1 \
        && udevadm trigger --type=devices --action=add --subsystem-match=dax --subsystem-match=nd \
            --subsystem-match=cxl --subsystem-match=virtio-ports >/dev/null 2>&1 \
        && udevadm settle --timeout=60 >/dev/null 2>&1; then
        echo 1 >/run/mhd/udev
        say "udevd running"
    else
        say "udevd failed to start; continuing without it"
    fi
fi
mark udev

# Let non-root users in the guest run the venv: its python may live under /root (pyenv), which is 0700
# on the host, and the checkout itself may sit in a 0700 directory (mktemp -d clones).  Open the
# ancestors of both the venv's python and what it resolves to.  Only the guest's overlay changes; the
# host's directories keep their modes.
# (Parameter expansion, not dirname: every fork+exec costs ~0.1 s under TCG.)
for p in "$MHD_PYTHON" "$(readlink -f "$MHD_PYTHON")"; do
    while p=${p%/*} && [ -n "$p" ]; do
        chmod o+x "$p" 2>/dev/null
    done
done

if [ "$MHD_SHELL" = 1 ]; then
    # --keep: a root shell on the serial console, for users attached to the console socket.
    /bin/busybox setsid -c /bin/sh -c 'cd; exec /bin/bash -l' </dev/ttyS0 >/dev/ttyS0 2>&1 &
fi

say "starting agent on $(uname -r) (host $MHD_HOST)"
env -i PATH="$MHD_PATH" HOME=/root LANG=C.UTF-8 MHD_WARM="$MHD_WARM" MHD_PRELOAD="$MHD_PRELOAD" \
    "$MHD_PYTHON" -m "$MHD_AGENT" \
    >/run/mhd/share/agent.log 2>&1
say "agent exited with $?"
sync
exec /bin/busybox poweroff -f
