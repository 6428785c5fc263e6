"""``python -m neuralgraph check-config``: validate a config before any work starts."""
from __future__ import annotations

import argparse
import sys

from neuralgraph.config import ConfigError, describe_schema, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuralgraph check-config", description=__doc__)
    parser.add_argument("config", nargs="?", help="experiment YAML file")
    parser.add_argument("--base", help="the experiment's original config: refuse changes to fixed fields")
    parser.add_argument("--schema", action="store_true", help="print every field with default and allowed values")
    args = parser.parse_args(argv)
    if args.schema:
        print(describe_schema())
        return 0
    if not args.config:
        parser.error("a config file is required (or --schema)")
    try:
        base = load_config(args.base) if args.base else None
        cfg = load_config(args.config, base=base)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.config}: ok (simulation {cfg.simulation_hash()}, time_step {cfg.training.time_step})")
    return 0
