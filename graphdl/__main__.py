"""`python -m graphdl ...` runs the `graphdl` command line (graphdl/cli.py)."""

import sys

from graphdl.cli import main

sys.exit(main())
