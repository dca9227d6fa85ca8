"""The harness's host half: options, checks, QEMU command lines, booting and driving the guests
through their agents, running the suites, judging skips against the kernel's declared-skips file,
and the report.  Entry point: mhd.host.cli (``python -m mhd``, run by qemu/cxl-mhd.sh).
"""
