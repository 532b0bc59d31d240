"""Entry point: ``python -m meshmind_fl_coordinator``."""

from meshmind_fl_coordinator._service import main

main()
