"""Where a run's wall time goes: phases recorded as they happen, printed as a table at the end."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Phase:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class Timing:
    clock: object = time.monotonic
    phases: list[Phase] = field(default_factory=list)
    load_start: str = ""
    load_end: str = ""

    def __post_init__(self) -> None:
        self.started = self.clock()  # type: ignore[operator]
        self.load_start = self.load_start or loadavg()

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = ""):  # type: ignore[no-untyped-def]
        """Time a block; the yielded Phase's ``detail`` may be filled in inside the block."""
        p = Phase(name, 0.0, detail)
        t0 = self.clock()  # type: ignore[operator]
        try:
            yield p
        finally:
            p.seconds = self.clock() - t0  # type: ignore[operator]
            self.phases.append(p)

    def add(self, name: str, seconds: float, detail: str = "") -> None:
        self.phases.append(Phase(name, seconds, detail))

    def total(self) -> float:
        return self.clock() - self.started  # type: ignore[operator]

    def table(self) -> str:
        self.load_end = self.load_end or loadavg()
        width = max([len(p.name) for p in self.phases] + [5])
        cores = os.cpu_count() or 1
        lines = [
            f"timing (wall seconds; load average {self.load_start} at start, {self.load_end} at end, "
            f"{cores} cores):"
        ]
        for p in self.phases:
            lines.append(f"  {p.name:<{width}} {p.seconds:7.1f}  {p.detail}".rstrip())
        lines.append(f"  {'total':<{width}} {self.total():7.1f}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "phases": [asdict(p) for p in self.phases],
                "total": round(self.total(), 2),
                "load_start": self.load_start,
                "load_end": self.load_end or loadavg(),
                "cores": os.cpu_count(),
            },
            indent=1,
        )


def loadavg(path: str = "/proc/loadavg") -> str:
    """The 1-minute load average (a kernel build may share the cores: say so with each figure)."""
    try:
        with open(path) as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return "?"


def boot_marks(text: str) -> dict[str, float]:
    """``name uptime`` lines the guest's init.sh/stage2.sh/agent append to share/boot.times."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out.setdefault(parts[0], float(parts[1]))
    return out


def boot_detail(marks: dict[str, float]) -> str:
    """``kernel 8.1, init 1.2, udev 4.0, agent warm-up 5.1`` from the guest's uptime marks."""
    order = [("init", "kernel"), ("stage2", "init"), ("udev", "udev"), ("agent", "setup")]
    order.append(("warm", "warm-up"))
    parts, prev = [], 0.0
    for key, label in order:
        if key in marks:
            parts.append(f"{label} {marks[key] - prev:.1f}")
            prev = marks[key]
    return ", ".join(parts)
