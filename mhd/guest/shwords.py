"""Shell words without a shell: what ``sh -c CMD`` would run, for the CMDs simple enough to tell.

mhd.guest.warm forks a venv Python command warm also when it comes as ``sh -c`` of one simple command,
and the agent runs pipelines of such commands itself (mhd.guest.pipeline), so a test's ``daxmode famfs
cat ... | sha256sum`` does not pay a full interpreter start for the daxmode half.  Anything these
functions do not fully understand gives None, and the shell runs it as always.
"""

from __future__ import annotations

from dataclasses import dataclass

_SH_SPECIAL = set("|&;<>()$`*?[]{}#~!\n\r")


def sh_tokens(cmd: str) -> list[tuple[str, bool]] | None:
    """``cmd`` split the way sh splits words, as (text, is_operator); None for anything beyond
    words, quotes, backslashes, ``|`` and the plain redirections ``<``, ``>``, ``>>`` (each after a
    blank, so ``2>`` is refused rather than misread)."""
    out: list[tuple[str, bool]] = []
    cur: list[str] = []
    have = False
    i, n = 0, len(cmd)

    def flush() -> None:
        nonlocal cur, have
        if have:
            out.append(("".join(cur), False))
            cur, have = [], False

    while i < n:
        c = cmd[i]
        if c in " \t":
            flush()
            i += 1
        elif c == "'":
            j = cmd.find("'", i + 1)
            if j < 0:
                return None
            cur.append(cmd[i + 1 : j])
            have, i = True, j + 1
        elif c == '"':
            j = i + 1
            while j < n and cmd[j] != '"':
                if cmd[j] in "$`\\":
                    return None
                j += 1
            if j >= n:
                return None
            cur.append(cmd[i + 1 : j])
            have, i = True, j + 1
        elif c == "\\":
            if i + 1 >= n or cmd[i + 1] in "\n\r":
                return None
            cur.append(cmd[i + 1])
            have, i = True, i + 2
        elif c == "|":
            if cmd[i + 1 : i + 2] in ("|", "&"):
                return None  # || and |&
            flush()
            out.append(("|", True))
            i += 1
        elif c in "<>":
            if have or (i and cmd[i - 1] not in " \t|"):
                return None  # 2>f, a>f: a descriptor number or a word glued to the operator
            op = ">>" if cmd[i : i + 2] == ">>" else c
            after = cmd[i + len(op) : i + len(op) + 1]
            if after and after in "&|<>":
                return None  # >&, >|, <>, <<, >>>
            out.append((op, True))
            i += len(op)
        elif c in _SH_SPECIAL:
            return None
        else:
            cur.append(c)
            have, i = True, i + 1
    flush()
    return out


def simple_command(cmd: str) -> list[str] | None:
    """Words of ``cmd`` when ``sh -c cmd`` would just run one program with them, else None.

    Quotes and backslashes are honoured; anything that makes the shell do more than split words
    (operators, redirections, expansions, globs, comments, assignments, newlines) gives None.
    """
    toks = sh_tokens(cmd)
    if not toks or any(op for _, op in toks) or "=" in toks[0][0]:
        return None
    return [t for t, _ in toks]


@dataclass(frozen=True)
class Stage:
    """One command of a pipeline, with its plain redirections."""

    words: list[str]
    stdin: str | None = None
    stdout: str | None = None
    append: bool = False


def parse_pipeline(cmd: str) -> list[Stage] | None:
    """``a x | b y > f``-style commands (``|``, ``<``, ``>``, ``>>`` and words only), else None."""
    toks = sh_tokens(cmd)
    if not toks:
        return None
    stages: list[Stage] = []
    words: list[str] = []
    redir: dict[str, object] = {}
    i = 0
    while i <= len(toks):
        tok = toks[i] if i < len(toks) else ("|", True)
        text, op = tok
        if op and text == "|":
            if not words or "=" in words[0]:
                return None
            stages.append(Stage(words, **redir))  # type: ignore[arg-type]
            words, redir = [], {}
            i += 1
            continue
        if op:
            if i + 1 >= len(toks) or toks[i + 1][1]:
                return None
            key = "stdin" if text == "<" else "stdout"
            if key in redir:
                return None
            redir[key] = toks[i + 1][0]
            if text == ">>":
                redir["append"] = True
            i += 2
            continue
        words.append(text)
        i += 1
    return stages
