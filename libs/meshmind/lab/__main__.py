"""Entry point of the lab process (``python -m meshmind.lab``)."""

from meshmind.lab._daemon import main

main()
