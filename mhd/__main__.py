"""``python -m mhd`` (what qemu/cxl-mhd.sh runs): the harness; see mhd.host.cli."""

import sys

from mhd.host.cli import main

sys.exit(main())
