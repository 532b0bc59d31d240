"""Entry point: ``python -m meshmind_consensus``."""

from meshmind_consensus._service import main

main()
