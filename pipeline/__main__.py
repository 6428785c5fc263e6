"""``python -m pipeline`` -> :func:`pipeline.cli.main`."""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
