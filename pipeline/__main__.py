"""``python -m pipeline <command>``: the workflow-side stage commands (see pipeline.cli)."""
import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["append-log"]:  # beside every training: no heavy imports
        from pipeline.append_log import main as append_log

        sys.exit(append_log(sys.argv[2:]))
    from pipeline.cli import main

    sys.exit(main())
