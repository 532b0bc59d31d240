"""The options every meshctl command shares, and how a command fails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from meshmind.ctl._render import error_console

RunDir = Annotated[
    Path,
    typer.Option("--run-dir", envvar="MESHMIND_LAB_DIR", help="Where the lab keeps its state."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="A NATS server of the mesh (default: NATS_URL, else the lab hub)."),
]


def fail(message: str) -> typer.Exit:
    """Print ``message`` as one error line on stderr; the exit to raise (status 1)."""
    error_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(1)
