"""daxmode(1) in roff, generated from the click command tree.

One page for the whole tool (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, COMMANDS with each
command's usage and options, FILES, ENVIRONMENT, EXIT STATUS).  A small writer of our own
rather than click-man: click-man emits one page per sub-command and has no place for the
exit-code table and the configuration files, which are what administrators look up.
"""

from __future__ import annotations

import datetime as _dt
import inspect

import click

from daxmode.errors import EXIT_CODES

FILES = [
    ("/etc/daxmode.d/*.toml", "Desired modes: [[device]] tables with match, mode, online, movable, force."),
    ("/etc/daxctl.conf.d/*.conf", "daxctl's [reconfigure-device NAME] sections, honoured by apply."),
    ("/etc/udev/rules.d/90-daxmode.rules", "Runs daxmode apply for each new dax device (install-units)."),
    ("/etc/systemd/system/daxmode-apply@.service", "The unit the rule starts on systemd hosts."),
    ("/run/daxmode-apply.log", "Log of the udev RUN fallback (hosts without systemd)."),
    (
        "/run/daxmode/",
        "Root-only (0700): device, bus and region locks, the journal of a transition in flight.",
    ),
]
ENVIRONMENT = [
    ("DAXMODE_ROOT", "Act on the tree under this directory instead of / (same as --root)."),
    ("DAXMODE_SIM", "1: the root is a simulated kernel (same as --sim; tests)."),
    ("DAXMODE_FAULT", "PATH:ERRNO:NTH[,...]: make the NTH write to PATH fail (tests of rollback)."),
    ("DAXMODE_DEBUG", "1: show the traceback of an internal error."),
]


def esc(text: str) -> str:
    """Escape roff specials: backslashes, leading dots/quotes, and hyphens in options."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for ln in text.splitlines():
        if ln.startswith((".", "'")):
            ln = "\\&" + ln
        lines.append(ln)
    return "\n".join(lines)


def _paragraphs(help_text: str) -> list[str]:
    """click help text as paragraphs; ``\\b`` blocks keep their line breaks."""
    out = []
    for block in inspect.cleandoc(help_text).split("\n\n"):
        if block.startswith("\b\n"):
            out.append(".nf\n" + esc(block[2:]) + "\n.fi")
        else:
            out.append(esc(" ".join(block.split())))
    return out


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for p in cmd.get_params(ctx):
        if not isinstance(p, click.Option) or p.hidden:
            continue
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        names, help_text = rec
        out.append(".TP\n.B " + esc(names) + "\n" + esc(help_text or ""))
    return out


def render(root: click.Command, prog: str, version: str, date: _dt.date | None = None) -> str:
    """The whole page as roff text."""
    date = date or _dt.date.today()
    ctx = click.Context(root, info_name=prog)
    parts = [
        f'.TH {prog.upper()} 1 "{date.isoformat()}" "{prog} {version}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- " + esc((root.help or "").strip().splitlines()[0] if root.help else prog),
        ".SH SYNOPSIS",
        f".B {prog}\n" + esc(" ".join(root.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        *_paragraphs(root.help or ""),
        ".SH OPTIONS",
        *_options(root, ctx),
    ]
    if isinstance(root, click.Group):
        parts.append(".SH COMMANDS")
        for name in root.list_commands(ctx):
            sub = root.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sctx = click.Context(sub, info_name=name, parent=ctx)
            usage = " ".join(sub.collect_usage_pieces(sctx))
            parts.append(f".SS {prog} {esc(name)} {esc(usage)}")
            parts.extend(_paragraphs(sub.help or ""))
            parts.extend(_options(sub, sctx))
    parts.append(".SH FILES")
    for path, what in FILES:
        parts.append(f".TP\n.I {esc(path)}\n{esc(what)}")
    parts.append(".SH ENVIRONMENT")
    for var, what in ENVIRONMENT:
        parts.append(f".TP\n.B {var}\n{esc(what)}")
    parts.append(".SH EXIT STATUS")
    for code, what in sorted(EXIT_CODES.items()):
        parts.append(f".TP\n.B {code}\n{esc(what)}")
    parts.append(".SH SEE ALSO\n.BR daxctl (1),\n.BR ndctl (1),\n.BR udev (7),\n.BR systemd.unit (5)")
    return "\n".join(parts) + "\n"
