"""``python -m pipeline <command>``: the workflow-side stage commands (see pipeline.cli)."""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
