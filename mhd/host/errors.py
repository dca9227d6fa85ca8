"""Harness failures, each with its own exit code (documented in docs/harness.md)."""

from __future__ import annotations


class HarnessError(Exception):
    """A failure the harness reports as one line on stderr."""

    exit_code = 1


class BadInput(HarnessError):
    """Missing/unreadable kernel, mismatched modules, old QEMU, too little memory or disk, busy file."""

    exit_code = 3


class GuestFailure(HarnessError):
    """A guest did not boot, the agent stopped answering, or bring-up failed."""

    exit_code = 4


class Interrupted(HarnessError):
    exit_code = 130
