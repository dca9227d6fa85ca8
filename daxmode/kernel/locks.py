"""Moved to :mod:`daxmode.runstate.locks` (daxmode's own state, not a kernel object); this name
is kept only until the branches written against it have merged."""

from daxmode.runstate.locks import *  # noqa: F403
from daxmode.runstate.locks import __all__ as __all__
