"""Warm forks (mhd.guest.warm, zygote, pipeline, shwords, agent): what may be forked, and that a fork
behaves like a new interpreter -- real forks, from a pristine zygote and from this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mhd.guest import shwords, warm, zygote

PROJECT = Path(__file__).resolve().parents[2]

# ---- warm forks: deciding (pure) ---------------------------------------------------------------


@pytest.fixture
def vbin(tmp_path: Path) -> Path:
    """A fake venv bin directory: interpreters, a console script, a script for another python."""
    b = tmp_path / "venv" / "bin"
    b.mkdir(parents=True)
    for name, text in {
        "python": "",
        "python3": "",
        "python3.11": "",
        "daxmode": f"#!{b}/python3\nimport sys\n",
        "unbuf": f"#!{b}/python3 -u\n",
        "isolated": f"#!{b}/python3 -I\n",
        "systool": "#!/usr/bin/python3\n",
    }.items():
        (b / name).write_text(text)
        (b / name).chmod(0o755)
    return b


def launch(b: Path, argv: list[str], env: dict[str, str] | None = None, startup=None):  # type: ignore[no-untyped-def]
    env = {"PATH": f"{b}:/usr/bin:/bin"} if env is None else env
    return warm.parse_launch(argv, env, bin_dir=str(b), startup_env=startup or {})


def test_interpreter_module_code_and_script_launches(vbin: Path) -> None:
    m = launch(vbin, [f"{vbin}/python", "-m", "pytest", "-q", "x"])
    assert (m.kind, m.target, m.argv) == ("module", "pytest", ["<module>", "-q", "x"])
    c = launch(vbin, [f"{vbin}/python3", "-c", "print(1)", "a"])
    assert (c.kind, c.target, c.argv) == ("code", "print(1)", ["-c", "a"])
    s = launch(vbin, [f"{vbin}/python3.11", "tool.py", "--flag"])
    assert (s.kind, s.target, s.argv) == ("path", "tool.py", ["tool.py", "--flag"])
    assert launch(vbin, [f"{vbin}/python", "-mpytest"]).target == "pytest"
    assert launch(vbin, ["python", "-c", "pass"]).kind == "code"  # found through PATH
    assert launch(vbin, ["python", "-c", "pass"]).command == ("python", "-c", "pass")


def test_console_script_runs_through_its_shebang(vbin: Path) -> None:
    d = launch(vbin, ["daxmode", "set", "dax0.0", "devdax"])
    assert (d.kind, d.target, d.argv) == (
        "path",
        f"{vbin}/daxmode",
        [f"{vbin}/daxmode", "set", "dax0.0", "devdax"],
    )
    assert launch(vbin, [f"{vbin}/unbuf"]).unbuffered
    assert launch(vbin, [f"{vbin}/isolated"]) is None  # -I changes start-up
    assert launch(vbin, [f"{vbin}/systool"]) is None  # the system's python is not this interpreter


@pytest.mark.parametrize(
    "argv",
    [
        ["@/python"],  # interactive
        ["@/python", "-"],  # program on stdin
        ["@/python", "-X", "importtime", "-c", "pass"],
        ["@/python", "-O", "x.py"],
        ["@/python", "-I", "-c", "pass"],
        ["@/python", "-W", "error", "-c", "pass"],
        ["@/python", "-c"],
        ["/root/.pyenv/versions/3.11.7/bin/python3.11", "-c", "pass"],  # the venv's base: not the venv
        ["./python", "-c", "pass"],  # relative to a cwd the child has not entered yet
        ["echo", "hi"],
        ["no-such-program-t"],
        [],
    ],
)
def test_what_needs_a_real_exec(vbin: Path, argv: list[str]) -> None:
    assert launch(vbin, [a.replace("@", str(vbin)) for a in argv]) is None


def test_interpreter_flags_and_python_variables(vbin: Path) -> None:
    py = f"{vbin}/python"
    env = {"PATH": "/bin"}
    f = launch(vbin, [py, "-uB", "-P", "-c", "pass"])
    assert f.unbuffered and f.dont_write_bytecode and f.safe_path
    e = launch(vbin, [py, "-c", "pass"], {**env, "PYTHONPATH": "/a:/b", "PYTHONDONTWRITEBYTECODE": "1"})
    assert e.pythonpath == ("/a", "/b") and e.dont_write_bytecode is True
    assert launch(vbin, [py, "-c", "pass"]).dont_write_bytecode is None
    # start-up-only variables must match this interpreter's
    assert launch(vbin, [py, "-c", "pass"], {**env, "PYTHONHASHSEED": "0"}) is None
    assert launch(vbin, [py, "-c", "pass"], env, startup={"PYTHONHASHSEED": "0"}) is None
    assert launch(vbin, [py, "-c", "pass"], {**env, "PYTHONHASHSEED": "0"}, startup={"PYTHONHASHSEED": "0"})


@pytest.mark.parametrize(
    ("cmd", "words"),
    [
        ("daxmode set dax0.0 devdax", ["daxmode", "set", "dax0.0", "devdax"]),
        ("  a   'b c'  \"d e\" f\\ g ", ["a", "b c", "d e", "f g"]),
        ("py -c 'import x; print(x[1] * 2)  # $HOME'", ["py", "-c", "import x; print(x[1] * 2)  # $HOME"]),
        ("a ''", ["a", ""]),
        ("a b=c", ["a", "b=c"]),
        ("a|b", None),
        ("a > f", None),
        ("a; b", None),
        ("a && b", None),
        ("echo $HOME", None),
        ('echo "$HOME"', None),
        ("echo `id`", None),
        ("ls *.py", None),
        ("cd ~", None),
        ("a # comment", None),
        ("X=1 a", None),
        ("a\nb", None),
        ("a 'unterminated", None),
        ("(a)", None),
        ("", None),
    ],
)
def test_simple_command(cmd: str, words: list[str] | None) -> None:
    assert shwords.simple_command(cmd) == words


def test_sh_c_of_one_python_command_is_seen_through(vbin: Path) -> None:
    env = {"PATH": f"{vbin}:/bin"}
    kw = {"bin_dir": str(vbin), "startup_env": {}}
    words, got = warm.launch_for(["/bin/sh", "-c", "daxmode list --json"], env, **kw)
    assert words == ["daxmode", "list", "--json"] and got is not None and got.kind == "path"
    for argv in (["sh", "-c", "daxmode list | wc -l"], ["sh", "-c", "echo hi"], ["sh", "-c", "daxmode", "x"]):
        assert warm.launch_for(argv, env, **kw)[1] is None


def test_sys_path_as_a_fresh_interpreter_builds_it(tmp_path: Path) -> None:
    base = ["/std", "/site"]
    m = warm.Launch("module", "pytest", pythonpath=("/pp",))
    assert warm.sys_path_for(m, "/cwd", base) == ["/cwd", "/pp", "/std", "/site"]
    assert warm.sys_path_for(warm.Launch("code", "pass"), "/cwd", base) == ["", "/std", "/site"]
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "s.py").write_text("")
    (tmp_path / "link.py").symlink_to(tmp_path / "real" / "s.py")
    p = warm.Launch("path", "link.py")
    assert warm.sys_path_for(p, str(tmp_path), base)[0] == str(tmp_path / "real")  # symlink resolved
    assert warm.sys_path_for(warm.Launch("path", "x.py", safe_path=True), "/cwd", base) == base


@pytest.mark.parametrize(
    ("code", "want"),
    [(None, (0, None)), (3, (3, None)), (256 + 7, (7, None)), (True, (1, None)), ("boom", (1, "boom"))],
)
def test_exit_status_like_the_interpreter(code: object, want: tuple[int, str | None]) -> None:
    assert warm.exit_status(code) == want


def test_preload_names_keep_only_requirements_the_project_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("import click\nfrom .b import x\ndef f():\n    import pyudev.core\n")
    (pkg / "sub" / "c.py").write_text("from json import dumps\n")
    (pkg / "bad.py").write_text("def (:\n")
    assert warm.imported_names(str(pkg)) >= {"click", "pyudev", "json"}
    names = warm.preload_names("daxmode", {"click"})
    assert names[0] == "daxmode" and "click" in names and "pyudev" not in names
    assert "pytest" in names and "_pytest" in names
    everything = warm.preload_names("daxmode")
    assert "click" in everything and "pyudev" in everything
    # A test extra (pyroute2) is never preloaded: the guests' daxmode does not import it.
    assert "pyroute2" not in everything


def test_preload_imports_submodules_but_never_a_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "warmpkg_t"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text("X = 1\n")
    (pkg / "broken.py").write_text("raise RuntimeError('nope')\n")
    (pkg / "__main__.py").write_text("raise SystemExit('ran the program')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rep = warm.preload(["warmpkg_t", "no_such_module_t"], walk=("warmpkg_t",))
    assert "warmpkg_t.one" in sys.modules and "warmpkg_t.__main__" not in sys.modules
    assert any("warmpkg_t.broken" in f for f in rep["failed"]) and any(
        "no_such_module_t" in f for f in rep["failed"]
    )
    import gc

    gc.unfreeze()


# ---- warm forks: running (real forks, from a pristine zygote and from this process) -----------

VENV_BIN = Path(sys.executable).parent
DAXMODE_SCRIPT = VENV_BIN / "daxmode"


@pytest.fixture(scope="module")
def zygote_at(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A fresh interpreter preloaded like a guest's agent, serving the zygote protocol."""
    sock = tmp_path_factory.mktemp("zygote") / "warm.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mhd.guest.zygote", str(sock), "daxmode", "click", "pytest"],
        stdout=subprocess.PIPE, cwd=PROJECT, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip().isdigit()
    yield str(sock)
    proc.kill()
    proc.wait()


def cold(argv: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


def hot(zsock: str, argv: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """Like ``cold`` but through the zygote hook; asserts the command really was forked warm."""
    before = warm.stats["warm"]
    with zygote.install_popen_hook(zsock):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    assert warm.stats["warm"] == before + 1, "not forked warm"
    return r


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "import sys; print(sys.argv, sys.path[0] == ''); sys.exit(7)", "a", "b"],
        ["-c", "import sys; print('to stderr', file=sys.stderr); raise SystemExit('bye')"],
        ["-c", "def f():\n    1 / 0\nf()"],
        ["-c", "print(__name__, __file__ if '__file__' in dir() else None)"],
        ["-m", "json.tool", "--sort-keys"],
        ["-m", "no_such_module_t"],
        ["-m", "daxmode", "--version"],
        ["-m", "daxmode", "set"],
        ["-m", "daxmode.sizes"],
        ["/nonexistent/script.py"],
        ["-u", "-c", "import sys; sys.stdout.write('x'); sys.stderr.write('y')"],
    ],
)
def test_a_warm_fork_behaves_like_a_new_interpreter(zygote_at: str, argv: list[str]) -> None:
    full = [sys.executable, *argv]
    kw = {"input": '{"b": 1, "a": 2}'} if "json.tool" in argv else {}
    want, got = cold(full, **kw), hot(zygote_at, full, **kw)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)


def test_console_script_and_sh_c_forked_like_a_new_process(zygote_at: str) -> None:
    from click.testing import CliRunner

    from daxmode.cli import main

    # Using the CLI in this process first changes click's state (version_option keeps the first
    # program name it sees): a fork of this process would print "main, version"; the zygote's do not.
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    for argv in ([str(DAXMODE_SCRIPT), "--version"], ["sh", "-c", f"{DAXMODE_SCRIPT} set nope"]):
        want, got = cold(argv), hot(zygote_at, argv)
        assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)


def test_fork_gets_env_cwd_and_fds_as_an_exec_would(zygote_at: str, tmp_path: Path) -> None:
    code = "import os, json; print(json.dumps([dict(os.environ), os.getcwd(), os.listdir('/proc/self/fd')]))"
    with open(tmp_path / "kept", "w") as kept, open(tmp_path / "closed", "w") as closed:
        os.set_inheritable(kept.fileno(), True)
        os.set_inheritable(closed.fileno(), True)
        kw = {"env": {"ONLY": "this"}, "cwd": tmp_path, "pass_fds": (kept.fileno(),)}
        r = hot(zygote_at, [sys.executable, "-c", code], **kw)
        env, cwd, fds = json.loads(r.stdout)
        assert env == {"ONLY": "this"} and cwd == str(tmp_path)
        assert str(kept.fileno()) in fds and str(closed.fileno()) not in fds
    with pytest.raises(FileNotFoundError):
        hot(zygote_at, [sys.executable, "-c", "pass"], cwd=tmp_path / "absent")


def test_popen_returns_at_once_and_signals_reach_the_child(zygote_at: str) -> None:
    code = "import time; print('up', flush=True); time.sleep(60)"
    with zygote.install_popen_hook(zygote_at):
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert p.stdout.readline() == b"up\n" and time.monotonic() - t0 < 30
        assert p.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(0.2)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == -signal.SIGTERM
        p.stdout.close()
        # Ctrl-C: KeyboardInterrupt, then death by SIGINT like CPython (the parent sees -2)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline() == b"up\n"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == -signal.SIGINT and b"KeyboardInterrupt" in err
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run([sys.executable, "-c", code], timeout=0.5)


def test_fork_runs_its_own_atexit_not_the_parents(tmp_path: Path) -> None:
    import atexit

    flag = tmp_path / "parent-handler"

    def parents() -> None:
        flag.write_text("ran")

    atexit.register(parents)
    try:
        code = "import atexit; atexit.register(print, 'own handler')"
        r = warm.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.stdout == "own handler\n" and not flag.exists()
    finally:
        atexit.unregister(parents)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_fork_drops_privileges(zygote_at: str) -> None:
    code = "import os; print(os.getuid(), os.getgid(), os.getgroups())"
    got = hot(zygote_at, [sys.executable, "-c", code], user=65534, group=65534, extra_groups=[])
    assert got.stdout == "65534 65534 []\n"

    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    assert warm.run([sys.executable, "-c", code], preexec_fn=drop, capture_output=True, text=True).stdout == (
        "65534 65534 []\n"
    )


def test_hook_execs_what_it_cannot_fork_and_can_be_suspended(zygote_at: str) -> None:
    w, e = warm.stats["warm"], warm.stats["exec"]
    with zygote.install_popen_hook(zygote_at):
        assert subprocess.check_output(["echo", "hi"], text=True) == "hi\n"
        assert subprocess.run([sys.executable, "-c", "pass"], preexec_fn=os.getpid).returncode == 0
        with warm.suspended():
            assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0
        assert (
            subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout
            == "42\n"
        )
    assert subprocess.Popen is not zygote.ZygotePopen
    assert warm.stats["warm"] == w + 1 and warm.stats["exec"] == e + 3


def test_without_a_zygote_the_hook_execs(tmp_path: Path) -> None:
    assert zygote.compatible()
    e = warm.stats["exec"]
    with zygote.install_popen_hook(str(tmp_path / "absent.sock")):
        assert (
            subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout == "1\n"
        )
    assert warm.stats["exec"] == e + 1


# ---- shell words and the agent's pipelines -----------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "stages"),
    [
        ("a b | c > f", [(["a", "b"], None, None, False), (["c"], None, "f", False)]),
        ("a < in | b >> out", [(["a"], "in", None, False), (["b"], None, "out", True)]),
        ("> f a", [(["a"], None, "f", False)]),
        (
            "py -c 'x | y > z' | wc -l",
            [(["py", "-c", "x | y > z"], None, None, False), (["wc", "-l"], None, None, False)],
        ),
        ("a|b", [(["a"], None, None, False), (["b"], None, None, False)]),
        ("a 2>f", None),
        ("a>f", None),
        ("a >&2", None),
        ("a > f > g", None),
        ("a || b", None),
        ("a |& b", None),
        ("a | ", None),
        ("| a", None),
        ("a >", None),
        ("a << EOF", None),
        ("X=1 a | b", None),
        ("a; b | c", None),
        ("a | b &", None),
    ],
)
def test_pipelines_the_agent_runs_itself(cmd: str, stages) -> None:  # type: ignore[no-untyped-def]
    got = shwords.parse_pipeline(cmd)
    if stages is None:
        assert got is None
    else:
        assert [(s.words, s.stdin, s.stdout, s.append) for s in got] == stages


def test_agent_runs_sh_c_as_dash_does(tmp_path: Path) -> None:
    """Each command through the agent (forked warm where it can) and through /bin/sh: same result."""
    from mhd.guest import agent

    py = sys.executable
    env = dict(agent.BASE_ENV, PATH=f"{VENV_BIN}:/usr/bin:/bin")
    out = tmp_path / "out.txt"
    (tmp_path / "in.txt").write_text("hello\n")
    cmds = [
        f"{py} -c 'print(12345)' | wc -c",
        f"{py} -c 'import sys; sys.stdout.write(sys.stdin.read().upper())' < {tmp_path}/in.txt | tr H J",
        f"{py} -c 'import os; os.kill(os.getpid(), 9)' | cat",
        f"{py} -c 'import os; os.kill(os.getpid(), 15)'",
        f"{py} -c 'import sys; print(\"e\", file=sys.stderr); sys.exit(3)' | cat",
        f"{py} -c 'import sys; sys.stdout.write(\"x\" * 200000)' | head -c 5",
        f"yes | {py} -c 'import sys; sys.stdin.read(10)'",
        f"nosuchprog-t | {py} -c pass",
        f"{py} -c pass > /nonexistent/dir/x",
        f"{DAXMODE_SCRIPT} --version | cat",
    ]
    warmed = 0
    for cmd in cmds:
        got = agent.run_command({"sh": cmd, "timeout": 60}, env)
        want = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
        assert (got["rc"], got["stdout"], got["stderr"]) == (want.returncode, want.stdout, want.stderr), cmd
        warmed += got["warm"]
    assert warmed == 8  # a missing program and an unopenable file go to sh, which says so itself
    r = agent.run_command({"sh": f"{py} -c 'print(1)' > {out}", "timeout": 60}, env)
    assert r["rc"] == 0 and r["warm"] and out.read_text() == "1\n"
    r = agent.run_command({"sh": f"{py} -c 'print(2)' >> {out}", "timeout": 60}, env)
    assert out.read_text() == "1\n2\n"
    r = agent.run_command({"sh": f"{py} -c 'import time; time.sleep(30)' | cat", "timeout": 0.5}, env)
    assert r["timed_out"]


def test_zygote_reports_sh_c_as_dash_does(zygote_at: str) -> None:
    cmd = f"{sys.executable} -c 'import os; os.kill(os.getpid(), 15)'"
    want = cold(["/bin/sh", "-c", cmd])
    got = hot(zygote_at, ["/bin/sh", "-c", cmd])
    assert (got.returncode, got.stderr) == (want.returncode, want.stderr) == (143, "Terminated\n")
    got = hot(zygote_at, ["bash", "-c", cmd])  # bash execs a lone command: the signal shows as such
    assert got.returncode == cold(["bash", "-c", cmd]).returncode == -15
