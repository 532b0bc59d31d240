"""Entry point: ``python -m meshmind_fl_trainer``."""

from meshmind_fl_trainer._service import main

main()
