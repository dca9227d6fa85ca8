"""``python -m daxmode``: the same command as the ``daxmode`` script."""

from daxmode.cli import run

run()
