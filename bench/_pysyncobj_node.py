"""One PySyncObj node holding a ``ReplDict`` with its journal on file, run until killed."""

from __future__ import annotations

import argparse
import time

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict


def main() -> None:
    """``_pysyncobj_node.py SELF JOURNAL MODE PEER...`` with MODE ``batch`` or ``nobatch``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("self_address", help="host:port this node listens on")
    parser.add_argument("journal", help="the journal file")
    parser.add_argument("mode", choices=["batch", "nobatch"])
    parser.add_argument("peers", nargs="+", help="host:port of every other voter")
    args = parser.parse_args()
    conf = SyncObjConf(journalFile=args.journal, appendEntriesUseBatch=args.mode == "batch")
    SyncObj(args.self_address, args.peers, conf=conf, consumers=[ReplDict()])
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
