"""``python -m bench`` (``make bench``): run every ``bench/bench_*.py`` module's ``main()``.

Each prints its own ratios measured side by side in one run; none of them asserts.
Name modules on the command line to run only those (``python -m bench bench_modes``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if n in argv]
    failed = 0
    for name in names:
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception:
            failed += 1
            print(f"bench: {name} failed:", file=sys.stderr)
            traceback.print_exc()
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
