"""Entry point: ``python -m meshmind_health_monitor``."""

from meshmind_health_monitor._service import main

main()
