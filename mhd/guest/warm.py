"""Warm Python: run a command of the venv's Python as a fork of an interpreter that has imported it all.

Under TCG a fresh interpreter pays its start-up and imports on every command: 1.5 s for
``python -c pass``, 4-9 s for ``import daxmode.cli`` or ``import pytest`` (docs/harness.md).  A fork
of a process that already holds those modules starts in a fraction of a second.  The guest agent is
such a process (``preload()``), and so is every in-guest pytest run it forks.

What a fork can run faithfully is decided by pure functions: ``parse_launch`` for an argv (the
venv's python with ``-m``/``-c``/a script, or a script whose ``#!`` names it, like the ``daxmode``
console script) and ``simple_command`` for ``sh -c`` strings without shell syntax.  Everything else
-- another program, an interpreter option that takes effect only at start-up, a ``PYTHON*``
variable that differs from this interpreter's -- runs as a real exec, exactly as before.

Only a process that has imported the modules but used none of them may fork itself this way: a
fork takes every module's state along.  The agent does (mhd.guest.agent), for the commands the host sends;
in-guest tests go through its pristine zygote instead (mhd.guest.zygote).

``popen()`` is ``subprocess.Popen`` with the fork doing the work in ``preexec_fn``: the child runs
the Python command and ends with ``os._exit``, so it never reaches the exec.  Everything Popen does
before the exec still happens (pipes, cwd, ``user=``/``group=``, new session, the caller's own
``preexec_fn``), and the parent gets a real Popen: pid, wait, communicate, send_signal.  The child
resets what a fresh interpreter would not have: signal dispositions and mask, stdio objects,
``__main__``, ``sys.path``, warnings filters, logging handlers, atexit handlers, tracing,
faulthandler; descriptors an exec would close (close-on-exec, or all but 0-2 and ``pass_fds``
under ``close_fds``) are closed at once.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import importlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
import warnings
from dataclasses import dataclass, field

from mhd.guest.shwords import simple_command

_INTERPRETER = re.compile(r"python(3(\.\d+)?)?")
_NOARG_FLAGS = set("uBqsP")
"""Interpreter flags a fork can honour (u, B, P) or that change nothing here (q; s in a venv)."""

DYNAMIC_ENV = ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH", "PYTHONSAFEPATH")
"""PYTHON* variables a fork applies itself; any other one must equal this interpreter's at start."""

STARTUP_PYENV = {k: v for k, v in os.environ.items() if k.startswith("PYTHON") and k not in DYNAMIC_ENV}
_PRISTINE_WARNINGS = list(warnings.filters)
_BASE_PATH: list[str] | None = None

stats = {"warm": 0, "exec": 0}
"""Commands started by this process so far, forked warm or exec'd (the harness reports them)."""


@dataclass(frozen=True)
class Launch:
    """One Python command, as a fresh interpreter would run it."""

    kind: str  # "module" (-m), "code" (-c) or "path" (a script file)
    target: str
    argv: list[str] = field(default_factory=list)  # sys.argv
    unbuffered: bool = False
    dont_write_bytecode: bool | None = None  # None: as this interpreter
    safe_path: bool = False
    pythonpath: tuple[str, ...] = ()
    command: tuple[str, ...] = ()  # the argv as given (sys.orig_argv)


# ---- deciding (pure) -------------------------------------------------------------------------


def set_base_path(paths: list[str]) -> None:
    """The interpreter's own sys.path without a script directory (the agent records it at start)."""
    global _BASE_PATH
    _BASE_PATH = list(paths)


def base_path() -> list[str]:
    if _BASE_PATH is not None:
        return list(_BASE_PATH)
    prefixes = (sys.prefix, sys.base_prefix)
    return [p for p in sys.path if p and os.path.isabs(p) and p.startswith(prefixes)]


def is_interpreter(path: str, bin_dir: str) -> bool:
    """The venv's own python (python, python3, python3.11 in its bin directory), not its base."""
    return os.path.dirname(path) == bin_dir and bool(_INTERPRETER.fullmatch(os.path.basename(path)))


def which(name: str, path_var: str | None) -> str | None:
    """Resolve argv[0] the way execvp does (a name with a slash is taken as it is)."""
    if "/" in name:
        return name
    for d in (path_var or os.defpath).split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def read_shebang(path: str) -> list[str] | None:
    """``#!/venv/bin/python3 -u`` -> ["/venv/bin/python3", "-u"]; None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
    # Linux passes everything after the interpreter as one argument.
    interp, _, arg = line.partition(" ")
    return [interp, arg.strip()] if arg.strip() else [interp]


def parse_launch(
    argv: list[str],
    env: dict[str, str],
    bin_dir: str | None = None,
    startup_env: dict[str, str] | None = None,
    shebang=read_shebang,
) -> Launch | None:
    """The Python command ``argv`` runs, if a warm fork of this interpreter can run it; else None."""
    if not argv:
        return None
    bin_dir = bin_dir or os.path.dirname(sys.executable)
    startup = STARTUP_PYENV if startup_env is None else startup_env
    exe = which(argv[0], env.get("PATH"))
    if exe is None or not os.path.isabs(exe):
        return None  # relative to a cwd the child has not entered yet: leave it to exec
    if is_interpreter(exe, bin_dir):
        opts, rest, script = argv[1:], [], None
    else:
        sb = shebang(exe)
        if not sb or not is_interpreter(sb[0], bin_dir):
            return None
        # The kernel runs: interpreter [its one argument] script args...
        opts, rest, script = sb[1:], argv[1:], exe
    for k in set(env) | set(startup):
        if k.startswith("PYTHON") and k not in DYNAMIC_ENV and env.get(k) != startup.get(k):
            return None  # fixed at interpreter start-up: only a real exec honours it
    flags: set[str] = set()
    i = 0
    kind = target = None
    while i < len(opts):
        a = opts[i]
        if a in ("-m", "-c"):
            if i + 1 >= len(opts):
                return None
            kind, target = ("module" if a == "-m" else "code"), opts[i + 1]
            rest = [("-c" if a == "-c" else "<module>"), *opts[i + 2 :], *rest]
            break
        if a.startswith("-m") or a.startswith("-c"):  # -mpytest, -cCODE
            kind, target = ("module" if a[1] == "m" else "code"), a[2:]
            rest = [("-c" if a[1] == "c" else "<module>"), *opts[i + 1 :], *rest]
            break
        if a == "-" or not a.startswith("-") or a == "--":
            if a == "--":
                i += 1
                if i >= len(opts):
                    return None
                a = opts[i]
            if a == "-":
                return None  # program on stdin
            kind, target = "path", a
            rest = [a, *opts[i + 1 :], *rest]
            break
        if len(a) > 1 and set(a[1:]) <= _NOARG_FLAGS:
            flags |= set(a[1:])
            i += 1
            continue
        return None  # -X, -W, -O, -E, -I, -i, ...: start-up options
    if kind is None:
        if script is None:
            return None  # interactive
        kind, target, rest = "path", script, [script, *rest]
    assert target is not None
    dwb = env.get("PYTHONDONTWRITEBYTECODE")
    return Launch(
        kind=kind,
        target=target,
        argv=rest,
        unbuffered="u" in flags or bool(env.get("PYTHONUNBUFFERED")),
        dont_write_bytecode=True if "B" in flags else (bool(dwb) if dwb is not None else None),
        safe_path="P" in flags or bool(env.get("PYTHONSAFEPATH")),
        pythonpath=tuple(p for p in env.get("PYTHONPATH", "").split(":") if p),
        command=tuple(argv),
    )


def launch_for(argv: list[str], env: dict[str, str], **kw) -> tuple[list[str], Launch | None]:
    """``(argv to report, Launch or None)`` for a command, seeing through ``sh -c SIMPLE``."""
    if len(argv) == 3 and argv[1] == "-c" and os.path.basename(argv[0]) in ("sh", "bash", "dash"):
        words = simple_command(argv[2])
        if words is not None:
            got = parse_launch(words, env, **kw)
            if got is not None:
                return words, got
        return argv, None
    return argv, parse_launch(argv, env, **kw)


def sys_path_for(launch: Launch, cwd: str, base: list[str]) -> list[str]:
    """sys.path as a fresh interpreter builds it: script dir / cwd / '', PYTHONPATH, the rest."""
    first: list[str] = []
    if not launch.safe_path:
        if launch.kind == "module":
            first = [cwd]
        elif launch.kind == "code":
            first = [""]
        else:
            first = [os.path.dirname(os.path.realpath(os.path.join(cwd, launch.target)))]
    return [*first, *launch.pythonpath, *base]


def exit_status(code: object) -> tuple[int, str | None]:
    """What the interpreter does with ``SystemExit(code)``: the status, and text for stderr."""
    if code is None:
        return 0, None
    if isinstance(code, bool):
        return int(code), None
    if isinstance(code, int):
        return code & 0xFF, None
    return 1, str(code)


# ---- warming (in the zygote) -----------------------------------------------------------------


def imported_names(package_dir: str) -> set[str]:
    """Top-level modules the package's sources import anywhere (also inside functions)."""
    import ast

    names: set[str] = set()
    for dirpath, _, files in os.walk(package_dir):
        for fn in files:
            if not fn.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, fn), "rb") as f:
                    tree = ast.parse(f.read())
            except (OSError, SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names


def preload_names(dist: str = "daxmode", used: set[str] | None = None) -> list[str]:
    """Top-level modules to import: the project, the requirements it imports (all of them when
    ``used`` is None), and pytest.  A requirement nothing imports is not worth its
    import time: pyroute2 alone would cost ~8 s of a guest's warm-up."""
    from importlib import metadata

    names = [dist.replace("-", "_")]
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        reqs = []
    tops = metadata.packages_distributions()
    by_dist: dict[str, list[str]] = {}
    for mod, dists in tops.items():
        for d in dists:
            by_dist.setdefault(d.lower().replace("_", "-"), []).append(mod)
    for r in reqs:
        if "extra ==" in r:
            continue
        req = re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower().replace("_", "-")
        names += sorted(
            m for m in by_dist.get(req, []) if not m.startswith("_") and (used is None or m in used)
        )
    # Not pytest's plugins (pytest11 entry points): pytest marks them for assertion rewriting and
    # warns when they are imported already.
    names += ["pytest", "_pytest"]
    return list(dict.fromkeys(names))


def preload(names: list[str] | None = None, walk: tuple[str, ...] = ("daxmode", "_pytest")) -> dict:
    """Import ``names`` (and every submodule of the packages in ``walk``); never raises."""
    import pkgutil

    t0 = time.monotonic()
    failed: list[str] = []
    before = len(sys.modules)
    try:
        names = preload_names() if names is None else names
    except Exception as e:  # a broken checkout must not stop the agent
        names, failed = [], [f"metadata: {e}"]
    for name in names:
        try:
            mod = importlib.import_module(name)
        except BaseException as e:
            failed.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if name in walk and hasattr(mod, "__path__"):
            for info in pkgutil.walk_packages(mod.__path__, name + ".", onerror=lambda n: None):
                if info.name.rsplit(".", 1)[-1] == "__main__":
                    continue  # importing it would run the program
                try:
                    importlib.import_module(info.name)
                except BaseException as e:
                    failed.append(f"{info.name}: {type(e).__name__}: {e}")
    gc.collect()
    gc.freeze()  # forks share the warm heap; the collector must not touch (copy) it
    return {
        "modules": len(sys.modules) - before,
        "failed": failed,
        "seconds": round(time.monotonic() - t0, 3),
    }


# ---- running (in the forked child) -----------------------------------------------------------


def _open_fds() -> list[int]:
    try:
        return [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:  # after setuid() /proc/self/fd belongs to root: try every descriptor number
        return list(range(3, min(os.sysconf("SC_OPEN_MAX"), 1 << 16)))


def _close_exec_fds(keep: set[int], close_all: bool) -> None:
    """Close what an exec would: close-on-exec descriptors, or everything but ``keep`` (close_fds)."""
    import fcntl

    for fd in _open_fds():
        if fd in keep:
            continue
        try:
            if close_all or fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                os.close(fd)
        except OSError:
            pass


def _fresh_stdio(unbuffered: bool) -> None:
    """New sys.std* over fds 0-2, configured like the interpreter's own (encoding, errors)."""
    templates = (sys.__stdin__, sys.__stdout__, sys.__stderr__)
    # The old objects are kept alive: finalising one would close a descriptor this process reuses.
    _stash.extend([sys.stdin, sys.stdout, sys.stderr, *templates])

    def stream(fd: int, write: bool, tmpl, line: bool):  # type: ignore[no-untyped-def]
        if not _fd_ok(fd):
            return None
        raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
        enc = getattr(tmpl, "encoding", None) or "utf-8"
        err = getattr(tmpl, "errors", None) or ("backslashreplace" if fd == 2 else "strict")
        if write and unbuffered:
            s = io.TextIOWrapper(raw, encoding=enc, errors=err, write_through=True)
        else:
            buf = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
            s = io.TextIOWrapper(buf, encoding=enc, errors=err, line_buffering=line)
        with contextlib.suppress(AttributeError):
            s.mode = "w" if write else "r"
        return s

    sys.stdin = sys.__stdin__ = stream(0, False, templates[0], False)
    sys.stdout = sys.__stdout__ = stream(1, True, templates[1], _fd_ok(1) and os.isatty(1))
    # stderr is line buffered even when it is not a terminal (Python >= 3.9).
    sys.stderr = sys.__stderr__ = stream(2, True, templates[2], True)


def _fd_ok(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


_stash: list[object] = []


def _reset_process_state() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for s in signal.valid_signals():
        if s in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(s, signal.SIG_DFL)
    # A fresh interpreter's own dispositions (pylifecycle.c: SIGPIPE/SIGXFSZ ignored, SIGINT raises).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for s in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, s):
            signal.signal(getattr(signal, s), signal.SIG_IGN)
    sys.settrace(None)
    sys.setprofile(None)
    threading.settrace(None)  # type: ignore[arg-type]
    threading.setprofile(None)  # type: ignore[arg-type]
    sys.excepthook = sys.__excepthook__
    warnings.filters[:] = _PRISTINE_WARNINGS
    atexit._clear()
    with contextlib.suppress(Exception):
        import faulthandler

        faulthandler.disable()
    if "logging" in sys.modules:
        import logging

        _stash.extend(logging.root.handlers)
        logging.root.handlers = []
        logging.root.setLevel(logging.WARNING)


def _finish(status: int) -> None:
    """Interpreter shutdown as far as a program can see it, then exit without unwinding."""
    me = threading.current_thread()
    for t in threading.enumerate():
        if t is not me and not t.daemon:
            with contextlib.suppress(Exception):
                t.join()
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for s in (sys.stdout, sys.stderr):
        try:
            if s is not None:
                s.flush()
        except BrokenPipeError:
            status = 120 if s is sys.stdout and status == 0 else status
        except Exception:
            pass
    os._exit(status)


def _fresh_main() -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    return main


def _run_target(launch: Launch) -> None:
    """Run the command the way CPython's pymain_run_* does, in a fresh ``__main__``."""
    import runpy

    main = _fresh_main()
    if launch.kind == "module":
        # A fresh interpreter has not imported the module it runs; this one may have (preload), and
        # runpy would then warn on stderr ("found in sys.modules ... prior to execution").
        if not hasattr(sys.modules.get(launch.target), "__path__"):  # a package runs its __main__
            sys.modules.pop(launch.target, None)
        runpy._run_module_as_main(launch.target, alter_argv=True)  # type: ignore[attr-defined]
    elif launch.kind == "path":
        if not os.path.exists(launch.target):
            exe = launch.command[0] if launch.command else sys.executable  # argv[0] as CPython prints it
            print(
                f"{exe}: can't open file {launch.target!r}: [Errno 2] No such file or directory",
                file=sys.stderr,
            )
            raise SystemExit(2)
        runpy.run_path(launch.target, run_name="__main__")
    else:
        exec(compile(launch.target, "<string>", "exec"), main.__dict__)


def child_main(
    launch: Launch,
    env: dict[str, str] | None,
    keep_fds: tuple[int, ...] = (),
    close_all: bool = True,
    first=None,
) -> None:
    """Run ``launch`` in this (freshly forked) process and exit; never returns."""
    status = 1
    try:
        _close_exec_fds({0, 1, 2, *keep_fds}, close_all)
        if first is not None:
            first()  # the caller's own preexec_fn, as Popen would run it
        gc.freeze()
        _reset_process_state()
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        _fresh_stdio(launch.unbuffered)
        sys.argv = list(launch.argv)
        sys.orig_argv = list(launch.command or launch.argv)
        sys.path[:] = sys_path_for(launch, os.getcwd(), base_path())
        if launch.dont_write_bytecode is not None:
            sys.dont_write_bytecode = launch.dont_write_bytecode
        importlib.invalidate_caches()
    except BaseException as e:
        with contextlib.suppress(Exception):
            os.write(2, f"warm: cannot start {launch.argv[:1]}: {type(e).__name__}: {e}\n".encode())
        os._exit(127)
    try:
        _run_target(launch)
        status = 0
    except SystemExit as e:
        status, text = exit_status(e.code)
        if text is not None:
            with contextlib.suppress(Exception):
                print(text, file=sys.stderr)
    except KeyboardInterrupt as e:
        with contextlib.suppress(BaseException):
            tb = _own_frames_skipped(e.__traceback__, launch)
            sys.excepthook(type(e), e.with_traceback(tb), tb)
        with contextlib.suppress(BaseException):
            _finish_flush()
        # As CPython: die of SIGINT so the parent sees -2, not a status.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        os._exit(130)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            tb = _own_frames_skipped(e.__traceback__, launch)
            sys.excepthook(type(e), e.with_traceback(tb), tb)
        status = 1
    _finish(status)


def _own_frames_skipped(tb, launch: Launch):  # type: ignore[no-untyped-def]
    """The traceback a fresh interpreter would print: without this module's frames (and without
    runpy's for a script, which CPython runs directly; ``-m`` tracebacks do show runpy)."""
    skip = {__file__}
    if launch.kind == "path":
        skip.add("<frozen runpy>")
        skip.add(getattr(sys.modules.get("runpy"), "__file__", "") or "<frozen runpy>")
    while tb is not None and tb.tb_frame.f_code.co_filename in skip:
        tb = tb.tb_next
    return tb


def _finish_flush() -> None:
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()


# ---- starting ---------------------------------------------------------------------------------


def enabled() -> bool:
    """Off with MHD_WARM=0 (``cxl-mhd.sh --no-warm`` sets it in the guests), or inside ``suspended()``."""
    return os.environ.get("MHD_WARM", "1") != "0" and not _suspended


_suspended = 0


@contextlib.contextmanager
def suspended():  # type: ignore[no-untyped-def]
    """Every command in the block is a real exec (``@pytest.mark.real_process``)."""
    global _suspended
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1


def popen(
    args: list[str] | str,
    *,
    env: dict[str, str] | None = None,
    preexec_fn=None,
    close_fds: bool = True,
    pass_fds=(),
    shell: bool = False,
    executable: str | None = None,
    warm: bool = True,
    _popen=None,
    **kw,
) -> subprocess.Popen:
    """``subprocess.Popen``, forked warm when the command is the venv's Python (see module doc)."""
    make = _popen or _ORIG_POPEN
    launch = None
    if warm and enabled() and executable is None:
        argv = ["/bin/sh", "-c", args] if shell and isinstance(args, str) else args
        if isinstance(argv, list | tuple) and (not shell or isinstance(args, str)):
            _, launch = launch_for([os.fspath(a) for a in argv], dict(os.environ if env is None else env))
    if launch is None:
        stats["exec"] += 1
        return make(
            args,
            env=env,
            preexec_fn=preexec_fn,
            close_fds=close_fds,
            pass_fds=pass_fds,
            shell=shell,
            executable=executable,
            **kw,
        )
    stats["warm"] += 1
    child_env = dict(os.environ if env is None else env)
    fn = functools.partial(child_main, launch, child_env, tuple(pass_fds), close_fds, preexec_fn)
    # The argv given to Popen is never exec'd; it is what the caller passed (for repr, .args).
    return make(args, env=env, preexec_fn=fn, close_fds=close_fds, pass_fds=pass_fds, shell=shell, **kw)


def run(args, *, input=None, capture_output=False, timeout=None, check=False, **kw):
    """``subprocess.run`` over ``popen``."""
    if input is not None:
        kw.setdefault("stdin", subprocess.PIPE)
    if capture_output:
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    with popen(args, **kw) as p:
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise
        except BaseException:
            p.kill()
            raise
        rc = p.poll()
    if check and rc:
        raise subprocess.CalledProcessError(rc, args, out, err)
    return subprocess.CompletedProcess(args, rc if rc is not None else -1, out, err)


_ORIG_POPEN = subprocess.Popen
