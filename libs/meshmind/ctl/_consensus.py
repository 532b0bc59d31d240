"""meshctl's consensus commands: the group's status, leader, decision log, members, leadership,
and its key-value store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from meshmind.bus import Bus, BusError, ServiceError, check_node_id
from meshmind.bus.protocol import (
    CONSENSUS_CAS,
    CONSENSUS_DELETE,
    CONSENSUS_GET,
    CONSENSUS_LOG,
    CONSENSUS_PUT,
    DecisionQuery,
    KvCas,
    KvKey,
    KvPut,
    KvWrite,
    MemberAction,
    MemberChange,
)
from meshmind.ctl._consensus_client import ConsensusClient
from meshmind.ctl._consensus_views import (
    decisions_table,
    entry_line,
    leader_line,
    members_table,
    sorted_statuses,
    status_table,
    write_line,
)
from meshmind.ctl._mesh_client import CtlError, target_url, with_bus
from meshmind.ctl._options import JsonFlag, RunDir, UrlOption, fail
from meshmind.ctl._render import console, print_json

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

consensus_app = typer.Typer(
    help="The consensus group: status, leader, decision log, members, leadership.",
    no_args_is_help=True,
)
members_app = typer.Typer(
    help="The group's voters and learners; add or remove one (through the leader).",
    invoke_without_command=True,
)
consensus_app.add_typer(members_app, name="members")
kv_app = typer.Typer(
    help="The consensus key-value store: linearizable reads and writes.", no_args_is_help=True
)

NodeOption = Annotated[
    str | None,
    typer.Option("--node", help="The host whose consensus service to ask (default: any)."),
]
LAB_DIR = Path(".meshmind/lab")


def _run(
    url: str | None,
    run_dir: Path,
    node: str | None,
    work: Callable[[ConsensusClient], Awaitable[T]],
) -> T:
    """Run ``work`` with a client of ``node``'s (or any host's) consensus service; any
    failure is one line on stderr and exit status 1."""
    if node is not None:
        _checked_node(node, "--node")

    async def connected(bus: Bus) -> T:
        return await work(ConsensusClient(bus, node))

    try:
        return with_bus(target_url(url, run_dir.resolve()), connected)
    except ServiceError as error:
        raise fail(error.description) from None
    except (BusError, CtlError) as error:
        raise fail(str(error)) from None


def _checked_node(node: str, what: str) -> str:
    try:
        return check_node_id(node)
    except ValueError as error:
        raise fail(f"{what} {node!r} is not a node id: {error}") from None


def _model(model: type[M], what: str, **fields: Any) -> M:
    """``model(**fields)``, or exit with the first thing wrong with them in one line."""
    try:
        return model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        raise fail(f"{what}: {first['msg']}") from None


def _show(value: BaseModel, json_out: bool, line: str) -> None:
    if json_out:
        print_json(value.model_dump(mode="json"))
    else:
        console.print(line, highlight=False, markup=False)


# --- the group ------------------------------------------------------------------------------


@consensus_app.command("status")
def consensus_status(
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Each host's view of the group: role, term, leader, commit and applied index, members."""
    statuses = sorted_statuses(_run(url, run_dir, node, lambda client: client.statuses()))
    if json_out:
        print_json([status.model_dump(mode="json") for status in statuses])
    else:
        console.print(status_table(statuses))


@consensus_app.command("leader")
def consensus_leader(
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """The leader and its term, as a host sees them (exit status 1 when none is known)."""
    _, status = _run(url, run_dir, node, lambda client: client.find_leader())
    if json_out:
        print_json({"leader": status.leader, "term": status.term, "seen_by": status.node})
    else:
        console.print(leader_line(status), highlight=False)


@consensus_app.command("log")
def consensus_log(
    after: Annotated[int, typer.Option(min=0, help="Only decisions after this one.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """The committed decision log, in order (a linearizable read)."""
    query = DecisionQuery(after=after, limit=limit)
    page = _run(url, run_dir, node, lambda client: client.ask(CONSENSUS_LOG, query))
    if json_out:
        print_json(page.model_dump(mode="json"))
    else:
        console.print(decisions_table(page))


@members_app.callback()
def consensus_members(
    context: typer.Context,
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """The voters and learners, as the leader sees them (with how far each log matches)."""
    if context.invoked_subcommand is not None:
        return
    status = _run(url, run_dir, node, lambda client: client.group_status())
    if json_out:
        print_json(status.model_dump(mode="json"))
    else:
        console.print(members_table(status))


def _change_members(
    action: MemberAction, host: str, url: str | None, run_dir: Path, json_out: bool
) -> None:
    change = _model(MemberChange, f"{host!r} is not a node id", action=action, node=host)
    status = _run(url, run_dir, None, lambda client: client.change_members(change))
    if json_out:
        print_json(status.model_dump(mode="json"))
    else:
        console.print(members_table(status))


@members_app.command("add")
def members_add(
    host: Annotated[str, typer.Argument(help="The host to add, or the learner to promote.")],
    learner: Annotated[
        bool, typer.Option("--learner", help="Add it as a learner (no vote).")
    ] = False,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Add a voter (or promote a learner to voter), or with --learner add a learner."""
    _change_members("add-learner" if learner else "add-voter", host, url, run_dir, json_out)


@members_app.command("remove")
def members_remove(
    host: Annotated[str, typer.Argument(help="The member to remove.")],
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Remove a voter or learner from the group."""
    _change_members("remove", host, url, run_dir, json_out)


@consensus_app.command("transfer")
def consensus_transfer(
    host: Annotated[str, typer.Argument(help="The voter to lead next.")],
    wait: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for it to lead.")] = 10.0,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Hand leadership to another voter, and wait until it leads."""
    target = _checked_node(host, "host")
    status = _run(url, run_dir, None, lambda client: client.transfer(target, wait))
    _show(status, json_out, leader_line(status))


# --- the key-value store --------------------------------------------------------------------


@kv_app.command("get")
def kv_get(
    key: Annotated[str, typer.Argument(help="The key to read.")],
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Read a key, linearizably."""
    request = _model(KvKey, f"{key!r} is not a valid key", key=key)
    entry = _run(url, run_dir, node, lambda client: client.ask(CONSENSUS_GET, request))
    _show(entry, json_out, entry_line(entry))


@kv_app.command("put")
def kv_put(
    key: Annotated[str, typer.Argument(help="The key to write.")],
    value: Annotated[str, typer.Argument(help="Its new value.")],
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Write a key; returns once the write is committed."""
    request = _model(KvPut, f"cannot write {key!r}", key=key, value=value)
    write = _run(url, run_dir, node, lambda client: client.ask(CONSENSUS_PUT, request))
    _show(write, json_out, write_line("written", write))


@kv_app.command("cas")
def kv_cas(
    key: Annotated[str, typer.Argument(help="The key to write.")],
    value: Annotated[str, typer.Argument(help="Its new value.")],
    expected: Annotated[
        str | None, typer.Option(help="Write only if the key holds this value now.")
    ] = None,
    revision: Annotated[
        int | None, typer.Option(min=0, help="Write only if this is still the key's revision.")
    ] = None,
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Compare and set: write only if the key holds --expected, or is at --revision; with
    neither, only if it has no value. Exit status 1 when it was not written."""
    if expected is not None and revision is not None:
        raise fail("--expected and --revision exclude each other")
    request = _model(
        KvCas,
        f"cannot write {key!r}",
        key=key,
        value=value,
        expected=expected,
        expected_revision=revision,
    )
    write: KvWrite = _run(url, run_dir, node, lambda client: client.ask(CONSENSUS_CAS, request))
    _show(write, json_out, write_line("written", write))
    if not write.ok:
        raise typer.Exit(1)


@kv_app.command("del")
def kv_delete(
    key: Annotated[str, typer.Argument(help="The key to delete.")],
    node: NodeOption = None,
    url: UrlOption = None,
    run_dir: RunDir = LAB_DIR,
    json_out: JsonFlag = False,
) -> None:
    """Delete a key (nothing happens when it has no value)."""
    request = _model(KvKey, f"{key!r} is not a valid key", key=key)
    write = _run(url, run_dir, node, lambda client: client.ask(CONSENSUS_DELETE, request))
    _show(write, json_out, write_line("deleted", write))
