"""Entry point: ``python -m meshmind_decision``."""

from meshmind_decision._service import main

main()
