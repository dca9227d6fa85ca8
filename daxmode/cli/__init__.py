"""The ``daxmode`` command: parse, call the library, print.

One error handler for every command (:meth:`DaxmodeGroup.main`): a daxmode error is one
stderr line ``daxmode: <message>`` and its exit code (daxmode.errors); a usage error (bad
option value, unknown option) is one line and exit 2; Ctrl-C outside a transition is exit
130; anything unexpected is one line naming the exception and exit 1 (``DAXMODE_DEBUG=1``
shows the traceback).  No command prints a traceback.

Commands live in modules loaded on first use, so ``daxmode list`` imports only what listing
needs (Python start-up is most of a command's wall time in a TCG guest).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from daxmode import __version__
from daxmode.errors import DaxmodeError

COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("daxmode.cli.devices", "list_cmd"),
    "set": ("daxmode.cli.devices", "set_cmd"),
    "apply": ("daxmode.cli.ops", "apply_cmd"),
    "install-units": ("daxmode.cli.ops", "install_units_cmd"),
    "uninstall-units": ("daxmode.cli.ops", "uninstall_units_cmd"),
    "create-device": ("daxmode.cli.ops", "create_device_cmd"),
    "destroy-device": ("daxmode.cli.ops", "destroy_device_cmd"),
    "resize": ("daxmode.cli.ops", "resize_cmd"),
    "famfs": ("daxmode.cli.famfs", "famfs"),
    "completion": ("daxmode.cli.ops", "completion_cmd"),
    "man": ("daxmode.cli.ops", "man_cmd"),
}
"""Command name -> (module, attribute); the module is imported only when the command is used."""


def _fail(msg: str, code: int) -> None:
    click.echo(f"daxmode: {msg}", err=True)
    sys.exit(code)


class DaxmodeGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)

    def main(  # click's overloads say standalone main never returns; ours may
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        name = prog_name or "daxmode"
        if not standalone_mode:
            return super().main(args, name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            cmd = e.ctx.command_path.removeprefix("daxmode").strip() if e.ctx else ""
            where = f"{cmd}: " if cmd else ""
            hint = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
            _fail(f"{where}{e.format_message()}{hint}", 2)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
                _fail("interrupted", 130)
            _fail("aborted", 1)
        except DaxmodeError as e:
            for w in e.warnings:  # e.g. what was repaired of an interrupted run
                click.echo(f"daxmode: warning: {w}", err=True)
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head): nothing more to say
            os._exit(141)
        except Exception as e:
            if os.environ.get("DAXMODE_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (DAXMODE_DEBUG=1 shows the traceback)", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=DaxmodeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    metavar="DIR",  # checked when first used (cli._common.make_sysfs): it must be a directory
    default=None,
    help="Act on the tree under DIR instead of / (tests). Default: $DAXMODE_ROOT or /.",
)
@click.option(
    "--sim",
    is_flag=True,
    envvar="DAXMODE_SIM",
    help="The --root tree is a simulated kernel (daxmode.sim); for tests and demos.",
)
@click.option("-v", "--verbose", count=True, help="Print each sysfs write as it happens.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.version_option(__version__, prog_name="daxmode")
@click.pass_context
def main(ctx: click.Context, root: str | None, sim: bool, verbose: int, quiet: bool) -> None:
    """Switch dax devices between devdax, fsdev (famfs) and system-ram, safely; run famfs on them."""
    from daxmode.cli._common import State  # not for --version/--help, which exit before this

    ctx.obj = State(root, sim, verbose, quiet)


def run() -> None:
    """``python -m daxmode`` and the console script."""
    main(prog_name="daxmode")
