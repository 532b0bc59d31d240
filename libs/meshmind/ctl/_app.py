"""meshctl: start a local mesh, degrade its links, and watch any mesh."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import meshmind.ctl._creds as creds
from meshmind.bus import (
    Bus,
    BusError,
    Empty,
    EndpointSpec,
    Message,
    RawMessage,
    ServiceError,
    decode,
)
from meshmind.bus.protocol import (
    CONTRACT,
    DISCOVERY_PEERS,
    LAB_LINK_CUT,
    LAB_LINK_RESTORE,
    LAB_LINK_SET,
    LAB_NODE_KILL,
    LAB_NODE_RESTART,
    LAB_STATUS,
    CutMode,
    LabStatus,
    LinkCut,
    LinkSet,
    LinkShape,
    NodeRef,
    PeerList,
    PeerQuery,
)
from meshmind.ctl._consensus import consensus_app, kv_app
from meshmind.ctl._decision import add_decision_commands
from meshmind.ctl._demo import run_demo
from meshmind.ctl._fl import fl_app
from meshmind.ctl._lab import lab_call, start_lab, stop_lab
from meshmind.ctl._mesh_client import CtlError, services_in_mesh, target_url, with_bus
from meshmind.ctl._options import JsonFlag, RunDir, UrlOption
from meshmind.ctl._options import fail as _fail
from meshmind.ctl._render import (
    console,
    error_console,
    lab_table,
    link_line,
    print_json,
    services_table,
)
from meshmind.ctl._units import parse_duration_ms, parse_percent, parse_rate_bps
from meshmind.ctl._views import link_matrix, links_json, links_table, peers_json, peers_table
from meshmind.health import read_links
from meshmind.lab import default_run_dir

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
link_app = typer.Typer(
    help="Shape, cut and restore a host's link to the hub.", no_args_is_help=True
)
node_app = typer.Typer(help="Kill and restart a host.", no_args_is_help=True)
app.add_typer(link_app, name="link")
app.add_typer(node_app, name="node")
creds_app = typer.Typer(
    help="Per-host credentials, the mesh CA and the hub's generated permissions.",
    no_args_is_help=True,
)
app.add_typer(creds_app, name="creds")
app.add_typer(fl_app, name="fl")
app.add_typer(consensus_app, name="consensus")
app.add_typer(kv_app, name="kv")
add_decision_commands(app)


def _default_dir() -> Path:
    return default_run_dir()


def _lab_call(
    run_dir: Path, spec: EndpointSpec[Any, Any], message: Message, timeout: float = 30.0
) -> Any:
    try:
        return lab_call(run_dir, spec, message, timeout)
    except CtlError as error:
        raise _fail(str(error)) from None


@app.callback()
def _main() -> None:
    """meshctl: operate a meshmind mesh."""


@app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, max=64, help="Hosts n1 … nN.")] = 3,
    run_dir: RunDir = Path(".meshmind/lab"),
    services: Annotated[bool, typer.Option(help="Start each host's services.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the lab.")] = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """Start a local mesh: a hub, N leaf servers behind link emulators, their services."""
    run_dir = run_dir.resolve()
    try:
        status = start_lab(run_dir, nodes, services=services, timeout=timeout)
    except CtlError as error:
        raise _fail(str(error)) from None
    if json_out:
        print_json(status.model_dump(mode="json"))
    else:
        console.print(lab_table(status))
        console.print(f"logs: {run_dir}  -  stop with `meshctl down`", highlight=False)


@app.command()
def down(
    run_dir: RunDir = Path(".meshmind/lab"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait before killing.")] = 30.0,
) -> None:
    """Tear the local mesh down: every service, leaf, link and the hub."""
    run_dir = run_dir.resolve()
    outcome = stop_lab(run_dir, timeout)
    if outcome == "not-running":
        console.print(f"no lab running in {run_dir}", highlight=False)
        return
    if outcome == "killed":
        console.print(f"[yellow]the lab did not stop in {timeout:g}s: killed[/yellow]")
    console.print(f"lab in {run_dir} is down", highlight=False)


@app.command()
def status(run_dir: RunDir = Path(".meshmind/lab"), json_out: JsonFlag = False) -> None:
    """The local mesh's hosts, leaf servers and links."""
    result: LabStatus = _lab_call(run_dir.resolve(), LAB_STATUS, Empty())
    if json_out:
        print_json(result.model_dump(mode="json"))
    else:
        console.print(lab_table(result))


@link_app.command("set")
def link_set(
    host: Annotated[str, typer.Argument(help="The host whose link to shape, e.g. n2.")],
    delay: Annotated[str, typer.Option(help="Added one-way latency, e.g. 80ms.")] = "0ms",
    jitter: Annotated[str, typer.Option(help="Latency varies by up to this, e.g. 20ms.")] = "0ms",
    rate: Annotated[str | None, typer.Option(help="Bandwidth cap, e.g. 1mbit.")] = None,
    stall: Annotated[str, typer.Option(help="Share of segments stalled, e.g. 5%.")] = "0%",
    stall_time: Annotated[str, typer.Option(help="How long a stall lasts.")] = "200ms",
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """Give a host's link a new shape (what is not given is not impaired)."""
    try:
        shape = LinkShape(
            delay_ms=parse_duration_ms(delay),
            jitter_ms=parse_duration_ms(jitter),
            rate_bps=parse_rate_bps(rate) if rate else None,
            stall_pct=parse_percent(stall),
            stall_ms=parse_duration_ms(stall_time),
        )
        request = LinkSet(node=host, shape=shape)
    except ValueError as error:
        raise _fail(str(error)) from None
    _show_link(_lab_call(run_dir.resolve(), LAB_LINK_SET, request), json_out)


class OneWay(enum.StrEnum):
    """The direction a one-way cut drops."""

    up = "up"
    down = "down"


@link_app.command("cut")
def link_cut(
    host: Annotated[str, typer.Argument(help="The host to partition from the hub.")],
    silent: Annotated[
        bool,
        typer.Option(
            "--silent",
            help="Keep its connections open and drop every byte, as a fading radio link: "
            "each side notices only through its own timeouts.",
        ),
    ] = False,
    one_way: Annotated[
        OneWay | None,
        typer.Option(
            "--one-way",
            help="Drop one direction only: up (host -> hub) or down (hub -> host).",
        ),
    ] = None,
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """Partition a host from the hub (its local traffic still flows).

    The cut is loud unless said otherwise: its connections are reset, so both sides know at
    once. `meshctl link restore` ends every kind of cut."""
    if silent and one_way:
        raise _fail("--silent and --one-way exclude each other")
    mode: CutMode = "silent" if silent else one_way.value if one_way else "loud"
    try:
        request = LinkCut(node=host, mode=mode)
    except ValueError as error:
        raise _fail(f"{host!r} is not a node id: {error}") from None
    _show_link(_lab_call(run_dir.resolve(), LAB_LINK_CUT, request), json_out)


@link_app.command("restore")
def link_restore(
    host: Annotated[str, typer.Argument(help="The host to reconnect.")],
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """Reconnect a host and clear every impairment of its link."""
    _show_link(_lab_call(run_dir.resolve(), LAB_LINK_RESTORE, _node(host)), json_out)


@node_app.command("kill")
def node_kill(
    host: Annotated[str, typer.Argument(help="The host to kill.")],
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """SIGKILL a host's leaf server and services, as a power cut would."""
    _show_host(_lab_call(run_dir.resolve(), LAB_NODE_KILL, _node(host)), json_out)


@node_app.command("restart")
def node_restart(
    host: Annotated[str, typer.Argument(help="The host to start again.")],
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """Start a host's leaf server and services again."""
    _show_host(_lab_call(run_dir.resolve(), LAB_NODE_RESTART, _node(host)), json_out)


@app.command()
def services(
    url: UrlOption = None,
    run_dir: RunDir = Path(".meshmind/lab"),
    wait: Annotated[float, typer.Option(help="Seconds to collect answers.")] = 0.5,
    json_out: JsonFlag = False,
) -> None:
    """Every service instance in the mesh ($SRV.PING, $SRV.INFO, $SRV.STATS)."""
    try:
        found = with_bus(
            target_url(url, run_dir.resolve()), lambda bus: services_in_mesh(bus, wait)
        )
    except CtlError as error:
        raise _fail(str(error)) from None
    if json_out:
        print_json(found)
    else:
        console.print(services_table(found))


@app.command()
def peers(
    node: Annotated[
        str | None, typer.Option(help="Whose view (default: NODE_ID, else n1).")
    ] = None,
    capability: Annotated[str | None, typer.Option(help="Only peers that can do this.")] = None,
    url: UrlOption = None,
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """The peers one host's discovery service sees (stale while it cannot reach the hub)."""
    observer = node or os.environ.get("NODE_ID") or "n1"

    async def ask(bus: Bus) -> PeerList:
        return await bus.request(
            DISCOVERY_PEERS, PeerQuery(capability=capability), node=observer, timeout=5
        )

    try:
        view = with_bus(target_url(url, run_dir.resolve()), ask)
    except (BusError, CtlError) as error:
        raise _fail(f"no answer from {observer}'s discovery: {error}") from None
    if json_out:
        print_json(peers_json(view))
    else:
        console.print(peers_table(view))


@app.command()
def links(
    url: UrlOption = None,
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """Every measured link, from the mesh-links bucket: a table and a quality matrix.

    Reports whose source and target disagree with their key, or dated in the future, are
    refused: counted and named on stderr, never shown."""
    try:
        checked = with_bus(target_url(url, run_dir.resolve()), read_links)
    except (BusError, CtlError) as error:
        raise _fail(str(error)) from None
    if checked.refused:
        error_console.print(
            f"refused {len(checked.refused)} inconsistent link report(s): "
            + ", ".join(f"{key} ({reason})" for key, reason in checked.refused.items())
        )
    reports = checked.accepted
    if json_out:
        print_json(links_json(reports))
        return
    console.print(links_table(reports))
    console.print(link_matrix(reports))


@app.command()
def watch(
    subject: Annotated[str, typer.Argument(help="A subject or pattern, e.g. 'mesh.>'.")],
    url: UrlOption = None,
    run_dir: RunDir = Path(".meshmind/lab"),
    count: Annotated[int, typer.Option(help="Stop after this many messages (0: never).")] = 0,
    seconds: Annotated[float, typer.Option(help="Stop after this long (0: never).")] = 0.0,
) -> None:
    """Print every message on SUBJECT as a JSON line, decoded by the protocol contract."""
    try:
        target = target_url(url, run_dir.resolve())
    except CtlError as error:
        raise _fail(str(error)) from None

    async def follow(bus: Bus) -> None:
        seen = 0
        done = asyncio.Event()

        async def on_message(message: RawMessage) -> None:
            nonlocal seen
            try:
                print(json.dumps(_decoded(message), sort_keys=True), flush=True)
            except BrokenPipeError:  # the reader went away (`meshctl watch ... | head`)
                done.set()
                return
            seen += 1
            if count and seen >= count:
                done.set()

        await bus.subscribe_raw(subject, on_message)
        await bus.flush()
        print(f"watching {subject} on {target}", file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), seconds or None)

    with contextlib.suppress(KeyboardInterrupt):
        try:
            with_bus(target, follow)
        except CtlError as error:
            raise _fail(str(error)) from None


@app.command()
def demo(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=3, max=64, help="Hosts.")] = 5,
    run_dir: RunDir = Path(".meshmind/demo"),
) -> None:
    """Start a local mesh, show it working, degrade and cut links, heal, tear down."""
    try:
        run_demo(nodes, run_dir.resolve())
    except CtlError as error:
        raise _fail(str(error)) from None


@creds_app.command("generate")
def creds_generate(
    nodes: Annotated[str, typer.Option("--nodes", help="Host ids, comma-separated.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the credentials.")],
    hub_name: Annotated[
        list[str] | None,
        typer.Option("--hub-name", help="A DNS name or IP of the hub (repeat); default loopback."),
    ] = None,
) -> None:
    """Write the CA, the hub's certificate and authorization, and each host's nkey seed.

    Existing seeds and the CA are kept, so adding hosts leaves the others' alone. Prints file
    paths only, never a secret.
    """
    try:
        lines = creds.generate(out.resolve(), creds.parse_nodes(nodes), hub_name or [])
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from None
    for line in lines:
        console.print(line, highlight=False)


@creds_app.command("check")
def creds_check(
    out: Annotated[Path, typer.Option("--out", help="Directory of the credentials.")],
) -> None:
    """Fail when the hub's authorization no longer matches the protocol contract."""
    current, message = creds.check(out.resolve())
    if not current:
        raise _fail(message)
    console.print(message, highlight=False)


def _decoded(message: RawMessage) -> dict[str, Any]:
    line: dict[str, Any] = {"subject": message.subject}
    model = CONTRACT.model_for(message.subject)
    if model is not None:
        try:
            line["data"] = decode(message.data, model, max_size=len(message.data)).model_dump(
                mode="json"
            )
            line["type"] = model.__name__
            return line
        except ServiceError as error:
            line["error"] = error.description
    try:
        line["data"] = json.loads(message.data)
    except ValueError:
        line["raw"] = base64.b64encode(message.data).decode()
    return line


def _node(host: str) -> NodeRef:
    try:
        return NodeRef(node=host)
    except ValueError as error:
        raise _fail(f"{host!r} is not a node id: {error}") from None


def _show_link(link: Any, json_out: bool) -> None:
    if json_out:
        print_json(link.model_dump(mode="json"))
    else:
        console.print(link_line(link), highlight=False)


def _show_host(host: Any, json_out: bool) -> None:
    if json_out:
        print_json(host.model_dump(mode="json"))
    else:
        state = "running" if host.running else "stopped"
        console.print(f"{host.node}: leaf server {state}; {link_line(host.link)}", highlight=False)


def main() -> None:
    """The ``meshctl`` entry point."""
    try:
        app()
    except CtlError as error:
        error_console.print(f"[red]error:[/red] {error}")
        raise SystemExit(1) from None
