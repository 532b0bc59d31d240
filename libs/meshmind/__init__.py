"""meshmind: a self-organising control plane for wireless mesh networks, over NATS."""

__version__ = "0.1.0"
