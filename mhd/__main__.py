"""``python -m mhd`` (with qemu/ on sys.path): the harness; see mhd.harness."""

import sys

from mhd.harness import main

sys.exit(main())
