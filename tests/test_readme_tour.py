"""The README's five-minute tour, run as written: every command in its block, as root, from a copy
of this checkout, in a private mount namespace (so the tour's famfs identity and FUSE mount stay
out of the host's), comparing what each prints with the block's ``#>`` lines.

``...`` in an expected line matches anything (UUIDs, pids, paths); everything else must match
exactly, line for line, and every command must exit 0.  ``#>~`` lines match in any order (umount's
two lines: the server's exit and the unmount race).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARK = "<!-- tour: run by tests/test_readme_tour.py -->"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or shutil.which("unshare") is None,
    reason="the tour mounts famfs through FUSE: needs root, /dev/fuse and unshare(1)",
)


def tour_steps(readme: str) -> list[tuple[str, list[str], bool]]:
    """(command, expected output lines, whether they come in any order) for each command of the tour
    block; comments are prose."""
    at = readme.index(MARK)
    m = re.compile(r"```sh\n(.*?)```", re.S).search(readme, at)
    assert m, "the tour block follows its marker"
    steps: list[tuple[str, list[str], bool]] = []
    for line in m.group(1).splitlines():
        if line.startswith(("#> ", "#>~ ")) or line == "#>":
            assert steps, "expected output before any command"
            cmd, want, unordered = steps[-1]
            any_order = line.startswith("#>~ ")
            want.append(line[4:] if any_order else line[3:])
            steps[-1] = (cmd, want, unordered or any_order)
        elif line.strip() and not line.startswith("#"):
            steps.append((line, [], False))
    return steps


def output_matches(want: list[str], got: list[str], any_order: bool) -> bool:
    if len(want) != len(got):
        return False
    if not any_order:
        return all(matches(w, g) for w, g in zip(want, got, strict=True))
    left = list(got)
    for w in want:
        hit = next((g for g in left if matches(w, g)), None)
        if hit is None:
            return False
        left.remove(hit)
    return True


def matches(pattern: str, line: str) -> bool:
    return re.fullmatch(".*?".join(re.escape(p) for p in pattern.split("...")), line) is not None


def test_tour_steps_parse() -> None:
    steps = tour_steps((ROOT / "README.md").read_text())
    assert steps[0][0].startswith("python3 -m venv") and any("sim create" in c for c, _, _ in steps)
    assert matches("server pid ...", "server pid 42") and not matches("server pid ...", "server pid")
    assert not matches("exit 7", "exit 70") and matches("a ... b", "a x.y b")
    assert output_matches(["b ...", "a"], ["a", "b 1"], True) and not output_matches(
        ["b ...", "a"], ["a", "b 1"], False
    )
    assert not output_matches(["a", "a"], ["a", "b"], True)


def _checkout_copy(dest: Path) -> None:
    """The checkout's files as they are now (committed or not), without build products."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / os.fsdecode(f)
        if src.is_file():
            (dest / os.fsdecode(f)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(f))


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    steps = tour_steps((ROOT / "README.md").read_text())
    checkout, home, tmp, out = (tmp_path / d for d in ("checkout", "home", "tmp", "out"))
    for d in (checkout, home, tmp, out):
        d.mkdir()
    _checkout_copy(checkout)
    lines = [
        "set -u",
        # if the tour stops half-way, take its mount down with it (the namespace dies with the server)
        'trap \'for m in $(awk "\\$9 == \\"fuse.famfs\\" {print \\$5}" /proc/self/mountinfo); do '
        'daxmode famfs umount --lazy "$m" >/dev/null 2>&1 || umount -l "$m"; done\' EXIT',
    ]
    for i, (cmd, _, _) in enumerate(steps):
        lines.append(f"{{ {cmd}\n}} >{shlex.quote(str(out / str(i)))} 2>&1 </dev/null")
        lines.append(f'rc=$?; [ $rc -eq 0 ] || {{ echo "step {i} exit $rc"; exit 1; }}')
    script = tmp_path / "tour.sh"
    script.write_text("\n".join(lines) + "\n")
    # /opt through an overlay: the host's /opt (pip's wheels) readable, the tour's identity kept apart
    upper, work = tmp_path / "opt-upper", tmp_path / "opt-work"
    upper.mkdir()
    work.mkdir()
    inner = (
        f"mount -t overlay overlay -o lowerdir=/opt,upperdir={upper},workdir={work} /opt && "
        f"rm -f /opt/famfs/system_uuid && cd {shlex.quote(str(checkout))} && exec bash {script}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DAXMODE_", "PYTHON"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", inner],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    done = sorted(int(p.name) for p in out.iterdir())
    failed = r.stdout.strip()
    assert r.returncode == 0, f"{failed or r.stderr}\n{steps[done[-1]][0] if done else ''}:\n" + (
        (out / str(done[-1])).read_text() if done else ""
    )
    for i, (cmd, want, any_order) in enumerate(steps):
        got = (out / str(i)).read_text().splitlines()
        if cmd.startswith("python3 -m venv"):  # pip's own chatter (warnings about this machine's indexes)
            continue
        assert output_matches(want, got, any_order), (
            f"step {i}: {cmd}\nexpected:\n" + "\n".join(want) + "\ngot:\n" + "\n".join(got)
        )
