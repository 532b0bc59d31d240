"""meshctl: start a local mesh, degrade its links, and watch any mesh."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

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
    LAB_SHUTDOWN,
    LAB_STATUS,
    LINKS_BUCKET,
    LabStatus,
    LinkReport,
    LinkSet,
    LinkShape,
    NodeRef,
    PeerList,
    PeerQuery,
)
from meshmind.ctl._mesh_client import CtlError, lab_state, services_in_mesh, target_url, with_bus
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
from meshmind.lab import default_run_dir, read_state
from meshmind.lab._state import is_lab_process, pid_alive, reap_orphans

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
link_app = typer.Typer(
    help="Shape, cut and restore a host's link to the hub.", no_args_is_help=True
)
node_app = typer.Typer(help="Kill and restart a host.", no_args_is_help=True)
app.add_typer(link_app, name="link")
app.add_typer(node_app, name="node")

RunDir = Annotated[
    Path,
    typer.Option("--run-dir", envvar="MESHMIND_LAB_DIR", help="Where the lab keeps its state."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="A NATS server of the mesh (default: NATS_URL, else the lab hub)."),
]
_MARKER = ".meshmind-lab"


def _default_dir() -> Path:
    return default_run_dir()


def _fail(message: str) -> typer.Exit:
    error_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _lab_call(
    run_dir: Path, spec: EndpointSpec[Any, Any], message: Message, timeout: float = 30.0
) -> Any:
    state = lab_state(run_dir)

    async def call(bus: Bus) -> Any:
        return await bus.request(spec, message, timeout=timeout)

    try:
        return with_bus(state.hub_url, call)
    except (BusError, CtlError) as error:
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
    if read_state(run_dir) is not None:
        raise _fail(f"a lab is already running in {run_dir} (`meshctl down` first)")
    _reap(run_dir)
    if run_dir.exists() and (run_dir / _MARKER).exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / _MARKER).touch()
    argv = [sys.executable, "-m", "meshmind.lab", "--nodes", str(nodes), "--run-dir", str(run_dir)]
    if not services:
        argv.append("--no-services")
    log_path = run_dir / "lab.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    status: LabStatus | None = None
    while status is None:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise _fail("the lab did not start:\n" + "\n".join(tail))
        time.sleep(0.1)
        status = _lab_status_once(run_dir)
    if json_out:
        print_json(status.model_dump(mode="json"))
    else:
        console.print(lab_table(status))
        console.print(f"logs: {run_dir}  -  stop with `meshctl down`", highlight=False)


def _lab_status_once(run_dir: Path) -> LabStatus | None:
    """The lab's status if it is up and serving, else None."""
    state = read_state(run_dir)
    if state is None:
        return None

    async def ask(bus: Bus) -> LabStatus | None:
        try:
            return await bus.request(LAB_STATUS, Empty(), timeout=5)
        except BusError:
            return None

    try:
        return with_bus(state.hub_url, ask)
    except CtlError:
        return None


@app.command()
def down(
    run_dir: RunDir = Path(".meshmind/lab"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait before killing.")] = 30.0,
) -> None:
    """Tear the local mesh down: every service, leaf, link and the hub."""
    run_dir = run_dir.resolve()
    state = read_state(run_dir)
    if state is None:
        _reap(run_dir)
        console.print(f"no lab running in {run_dir}", highlight=False)
        return
    with contextlib.suppress(typer.Exit):
        _lab_call(run_dir, LAB_SHUTDOWN, Empty(), timeout=5.0)
    deadline = time.monotonic() + timeout
    while pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(state.pid) and is_lab_process(state.pid):
        os.kill(state.pid, signal.SIGKILL)
        console.print(f"[yellow]the lab did not stop in {timeout:g}s: killed[/yellow]")
    _reap(run_dir)
    console.print(f"lab in {run_dir} is down", highlight=False)


def _reap(run_dir: Path) -> None:
    reaped = reap_orphans(run_dir)
    if reaped:
        error_console.print(
            f"[yellow]killed {len(reaped)} process(es) left by an earlier lab "
            f"in {run_dir}: {reaped}[/yellow]"
        )


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


@link_app.command("cut")
def link_cut(
    host: Annotated[str, typer.Argument(help="The host to partition from the hub.")],
    run_dir: RunDir = Path(".meshmind/lab"),
    json_out: JsonFlag = False,
) -> None:
    """Partition a host from the hub (its local traffic still flows)."""
    _show_link(_lab_call(run_dir.resolve(), LAB_LINK_CUT, _node(host)), json_out)


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
    """Every measured link, from the mesh-links bucket: a table and a quality matrix."""

    async def read(bus: Bus) -> list[LinkReport]:
        try:
            bucket = await bus.hub().key_value(LINKS_BUCKET, LinkReport, create=False)
        except KeyError:
            return []
        return list((await bucket.values()).values())

    try:
        reports = with_bus(target_url(url, run_dir.resolve()), read)
    except (BusError, CtlError) as error:
        raise _fail(str(error)) from None
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
    from meshmind.ctl._demo import run_demo

    try:
        run_demo(nodes, run_dir.resolve())
    except CtlError as error:
        raise _fail(str(error)) from None


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
