"""Write a host's share of the demo text data set: ``python -m meshmind.fl.demo_data DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from meshmind.fl._demo_text import write_demo_data


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and write ``DIR/demo.jsonl``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path, help="the host's data directory")
    parser.add_argument("--node-index", type=int, default=0, help="this host's index (0-based)")
    parser.add_argument("--nodes", type=int, default=1, help="how many hosts share the set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=400, help="sentences in the whole set")
    args = parser.parse_args(argv)
    path = write_demo_data(args.directory, args.node_index, args.nodes, args.seed, args.count)
    print(path)


if __name__ == "__main__":
    main()
