"""meshctl, the operator's command line."""

from meshmind.ctl._app import app, main

__all__ = ["app", "main"]
