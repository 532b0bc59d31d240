"""Entry point: ``python -m meshmind_discovery``."""

from meshmind_discovery._service import main

main()
