"""``python -m meshmind.ctl``."""

from meshmind.ctl._app import main

main()
