"""A service stuck in its drain: it ignores SIGTERM, so only SIGKILL ends it."""

from __future__ import annotations

import signal
import time

READY = "ignoring SIGTERM"
"""Printed once SIGTERM is ignored: a test waits for it before stopping the lab."""


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(READY, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
