"""meshctl's decision commands: the decision history, make_decision, and a mesh-wide sweep."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from pydantic import ValidationError
from rich.table import Table

from meshmind.bus import Bus, BusError, ServiceError, check_node_id
from meshmind.bus.protocol import (
    DECISION_DECIDE,
    DECISION_HISTORY,
    DECISION_SERVICE,
    DECISION_SWEEP,
    AnomalyKind,
    DecideRequest,
    DecisionHistoryQuery,
    DecisionRecord,
    EvidenceItem,
    SweepRequest,
    SweepResult,
)
from meshmind.ctl._mesh_client import CtlError, target_url, with_bus
from meshmind.ctl._options import JsonFlag, RunDir, UrlOption, fail
from meshmind.ctl._render import console, print_json

T = TypeVar("T")
LAB_DIR = Path(".meshmind/lab")
KINDS = get_args(AnomalyKind)

NodeOption = Annotated[
    str | None,
    typer.Option("--node", help="The host whose decision service to ask (default: any)."),
]


async def _a_decision_host(bus: Bus) -> str:
    """A host whose decision service answers ``$SRV.PING``."""
    pings = await bus.gather_raw(f"$SRV.PING.{DECISION_SERVICE}", wait=0.5)
    nodes = sorted(
        node for reply in pings if isinstance(node := _metadata_node(reply.data), str) and node
    )
    if not nodes:
        raise CtlError("no decision service answers in this mesh")
    return nodes[0]


def _metadata_node(data: bytes) -> str | None:
    try:
        document: Any = json.loads(data)
    except ValueError:
        return None
    node = (document.get("metadata") or {}).get("node") if isinstance(document, dict) else None
    return node if isinstance(node, str) else None


def _run(
    url: str | None, run_dir: Path, node: str | None, work: Callable[[Bus, str], Awaitable[T]]
) -> T:
    """Run ``work`` against ``node``'s (or any host's) decision service; a failure is one
    line on stderr and exit status 1."""
    if node is not None:
        try:
            check_node_id(node)
        except ValueError as error:
            raise fail(f"--node {node!r} is not a node id: {error}") from None

    async def connected(bus: Bus) -> T:
        return await work(bus, node or await _a_decision_host(bus))

    try:
        return with_bus(target_url(url, run_dir.resolve()), connected)
    except ServiceError as error:
        raise fail(error.description) from None
    except (BusError, CtlError) as error:
        raise fail(str(error)) from None


def decision_line(record: DecisionRecord) -> str:
    """One decision as a line: what, on whom, agreed how, done how, and with what outcome."""
    approvals = sum(v.approve for v in record.votes)
    executor = record.executor
    if record.taken_over_from is not None:
        executor += f", taken over from {record.taken_over_from}"
    return (
        f"#{record.seq or '?'} {record.key}: {record.action} on {record.target} "
        f"({approvals}/{len(record.members)} approved, quorum {record.quorum}; "
        f"proposed by {record.proposer}, executed by {executor}); "
        f"executed: {record.executed or 'not yet'}; outcome: {record.outcome or 'pending'}"
    )


def decisions_table(records: list[DecisionRecord]) -> Table:
    """The decision history as a table, with evidence and votes."""
    table = Table(title="decisions")
    for column in ("seq", "anomaly", "evidence", "action", "votes", "executed", "outcome"):
        table.add_column(column, overflow="fold")
    for record in records:
        evidence = "; ".join(f"{e.observer}: {e.what}" for e in record.anomaly.evidence)
        votes = ", ".join(f"{v.voter} {'yes' if v.approve else 'no'}" for v in record.votes)
        table.add_row(
            str(record.seq or ""),
            record.key,
            evidence,
            f"{record.action} {record.target}",
            f"{votes} (quorum {record.quorum})",
            record.executed or "",
            record.outcome or "pending",
        )
    return table


def sweep_table(result: SweepResult) -> Table:
    """A finished sweep: every engaged host, who engaged it, and its health."""
    table = Table(
        title=f"sweep {result.computation}: {len(result.reports)} hosts, "
        f"done in {result.duration_s * 1000:.0f} ms, {result.messages} messages"
    )
    for column in ("host", "engaged by", "state", "detail"):
        table.add_column(column)
    for report in result.reports:
        table.add_row(report.node, report.parent or "(root)", report.state, report.detail)
    return table


def add_decision_commands(app: typer.Typer) -> None:
    """Register ``decisions``, ``decide`` and ``sweep`` on meshctl."""

    @app.command("decisions")
    def decisions(
        node: NodeOption = None,
        after: Annotated[
            int, typer.Option("--after", min=0, help="Log position to start after.")
        ] = 0,
        limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
        url: UrlOption = None,
        run_dir: RunDir = LAB_DIR,
        json_out: JsonFlag = False,
    ) -> None:
        """Committed decisions, with their evidence, votes, what was done and the outcome."""
        query = DecisionHistoryQuery(after=after, limit=limit)
        history = _run(
            url,
            run_dir,
            node,
            lambda bus, host: bus.request(DECISION_HISTORY, query, timeout=15, node=host),
        )
        if json_out:
            print_json(history.model_dump(mode="json"))
        else:
            console.print(decisions_table(history.decisions))

    @app.command("decide")
    def decide(
        kind: Annotated[str, typer.Argument(help=f"The anomaly: {', '.join(KINDS)}.")],
        subject: Annotated[str, typer.Argument(help="A host, or a link as source.target.")],
        episode: Annotated[
            str | None, typer.Option("--episode", help="Which occurrence (default: the current).")
        ] = None,
        evidence: Annotated[
            list[str] | None, typer.Option("--evidence", help="What you saw (repeatable).")
        ] = None,
        timeout_ms: Annotated[int, typer.Option("--timeout-ms", min=10, max=120_000)] = 5000,
        node: NodeOption = None,
        url: UrlOption = None,
        run_dir: RunDir = LAB_DIR,
        json_out: JsonFlag = False,
    ) -> None:
        """make_decision(context, timeout_ms): have the mesh agree on and commit a decision."""
        try:
            request = DecideRequest(
                kind=kind,
                subject=subject,
                episode=episode,
                evidence=[
                    EvidenceItem(observer="meshctl", what=what, at=0.0) for what in evidence or []
                ],
                timeout_ms=timeout_ms,
            )
        except ValidationError as error:
            first = error.errors()[0]
            raise fail(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        record = _run(
            url,
            run_dir,
            node,
            lambda bus, host: bus.request(
                DECISION_DECIDE, request, timeout=timeout_ms / 1000 + 2, node=host
            ),
        )
        if json_out:
            print_json(record.model_dump(mode="json"))
        else:
            console.print(decision_line(record), highlight=False, markup=False)

    @app.command("sweep")
    def sweep(
        timeout_ms: Annotated[int, typer.Option("--timeout-ms", min=10, max=120_000)] = 10_000,
        node: NodeOption = None,
        url: UrlOption = None,
        run_dir: RunDir = LAB_DIR,
        json_out: JsonFlag = False,
    ) -> None:
        """A mesh-wide health sweep, reported once every engaged host is done."""
        request = SweepRequest(timeout_ms=timeout_ms)
        result = _run(
            url,
            run_dir,
            node,
            lambda bus, host: bus.request(
                DECISION_SWEEP, request, timeout=timeout_ms / 1000 + 2, node=host
            ),
        )
        if json_out:
            print_json(result.model_dump(mode="json"))
        else:
            console.print(sweep_table(result))
