"""What a mode transition did, as the user sees it (``set``'s line and its JSON form)."""

from __future__ import annotations

from dataclasses import dataclass, field

from daxmode._plan import Plan, mode_name
from daxmode.kernel import memory
from daxmode.kernel.devices import Mode
from daxmode.kernel.memory import MemoryBlock


@dataclass
class Outcome:
    device: str
    start: Mode | None
    target: Mode
    plan: Plan
    changed: bool
    dry_run: bool = False
    online_blocks: int = 0
    total_blocks: int = 0
    movable: bool | None = None
    warnings: list[str] = field(default_factory=list)
    side_effects_undone: list[str] = field(default_factory=list)
    recovered: str | None = None  # what an interrupted earlier run left, and how it was repaired

    def summary(self) -> str:
        if self.dry_run:
            return f"{self.device}: dry run, {len(self.plan.actions)} action(s) planned"
        what = f"already {self.target}" if not self.changed else f"{mode_name(self.start)} -> {self.target}"
        if self.target is Mode.SYSTEM_RAM:
            zone = "" if self.movable is None else (", movable" if self.movable else ", not movable")
            what += f" ({self.online_blocks}/{self.total_blocks} memory blocks online{zone})"
        return f"{self.device}: {what}"

    def to_json(self) -> dict[str, object]:
        """What ``set --json`` prints: one object, keys in the style of ``list --json``."""
        out: dict[str, object] = {
            "chardev": self.device,
            "from": mode_name(self.start),
            "to": self.target.value,
            "changed": self.changed,
            "steps": [s.describe() for s in self.plan.steps],
        }
        if self.dry_run:
            out["dry_run"] = True
            out["plan"] = [a.to_json() for a in self.plan.actions]
        if self.target is Mode.SYSTEM_RAM and not self.dry_run:
            out["online_memblocks"] = self.online_blocks
            out["total_memblocks"] = self.total_blocks
            if self.movable is not None:
                out["movable"] = self.movable
        out["side_effects_undone"] = self.side_effects_undone
        out["warnings"] = self.warnings
        if self.recovered:
            out["recovered"] = self.recovered
        return out


def outcome(p: Plan, changed: bool) -> Outcome:
    """What a run did: the plan, whether anything changed, and the device's blocks as it left them."""
    ctx = p.ctx
    out = Outcome(ctx.name, p.start, p.target, p, changed=changed, warnings=ctx.warnings)
    out.side_effects_undone = ctx.undone_side_effects
    if p.target is Mode.SYSTEM_RAM:
        blocks = ctx.current()
        if any(b.online and b.zones is None for b in blocks):
            zones = memory.read_zones(ctx.sysfs, [b.id for b in blocks])
            blocks = [MemoryBlock(b.id, b.state, zones[b.id]) for b in blocks]
        out.total_blocks = len(blocks)
        out.online_blocks = sum(b.online for b in blocks)
        if blocks and out.online_blocks == len(blocks):
            out.movable = all(b.zones == "Movable" for b in blocks)
    return out
