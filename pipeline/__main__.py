"""``python -m pipeline <command>``: the workflow-side stage commands (see pipeline.cli)."""
import sys

from pipeline.cli import main

sys.exit(main())
