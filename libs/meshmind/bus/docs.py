"""Generates docs/protocol.md and docs/schemas/*.json from the protocol module (``make docs``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meshmind.bus._contract import Contract
from meshmind.bus._message import Message, Record
from meshmind.bus.protocol import CONTRACT

HEADER = """# meshmind protocol

Generated from `libs/meshmind/bus/protocol.py` by `make docs`; do not edit by hand.

Every payload is a msgpack map of the model named here, with its schema version in `v`.
Placeholders such as `{node}` stand for a host's id (`[A-Za-z0-9_-]+`). Endpoints are served
through the NATS Services API (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS` list them); an endpoint
answers bad input with the `Nats-Service-Error` and `Nats-Service-Error-Code` headers (400
invalid, 404 unknown, 413 too large, 426 unsupported schema version, 500 internal error).
Requests and events carry the W3C `traceparent` header. JSON Schemas of every model are in
`schemas/`.

Who may publish, read, request and serve each subject is part of the contract: the hub's
permission blocks for every host's leaf connection are generated from it
(`meshctl creds generate`), so nats-server itself refuses the rest. Where a payload names a host
that its subject names too, a message whose payload names another host is dropped and counted.
"""


def _models(contract: Contract) -> list[type[Record]]:
    found: dict[str, type[Record]] = {}

    def visit(model: type[Record]) -> None:
        if model.__name__ in found:
            return
        found[model.__name__] = model
        for field in model.model_fields.values():
            for candidate in _nested(field.annotation):
                visit(candidate)

    for event in contract.events:
        visit(event.model)
    for endpoint in contract.endpoints:
        visit(endpoint.request)
        visit(endpoint.reply)
    return [found[name] for name in sorted(found)]


def _nested(annotation: Any) -> Iterable[type[Record]]:
    if isinstance(annotation, type) and issubclass(annotation, Record):
        yield annotation
    for argument in getattr(annotation, "__args__", ()):
        yield from _nested(argument)


def _type_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return (
            f"[{schema['$ref'].rsplit('/', 1)[-1]}](#{schema['$ref'].rsplit('/', 1)[-1].lower()})"
        )
    if "anyOf" in schema:
        return " or ".join(_type_name(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    if schema.get("type") == "array":
        return f"list of {_type_name(schema.get('items', {}))}"
    return str(schema.get("type", "any"))


def _model_section(model: type[Record]) -> list[str]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    lines = [f"### {model.__name__}", "", (model.__doc__ or "").strip(), ""]
    if issubclass(model, Message):
        lines += [f"Schema version {model.schema_version}.", ""]
    lines += ["| field | type | required | default | description |", "|---|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        default = json.dumps(prop["default"]) if "default" in prop else ""
        lines.append(
            f"| `{name}` | {_type_name(prop)} | {'yes' if name in required else 'no'} "
            f"| {default} | {prop.get('description', '')} |"
        )
    return [*lines, ""]


def _claim(path: str | None) -> str:
    return f"; payload `{path}` = the subject's host" if path else ""


def protocol_markdown(contract: Contract = CONTRACT) -> str:
    """The protocol document."""
    lines = [
        HEADER,
        "## Endpoints",
        "",
        "| service | endpoint | subject | request | reply | requested by | served by | what |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in contract.endpoints:
        lines.append(
            f"| {e.service} | `{e.name}` | `{e.subject}` | [{e.request.__name__}]"
            f"(#{e.request.__name__.lower()}) | [{e.reply.__name__}](#{e.reply.__name__.lower()})"
            f" | {e.requesters} | {e.server}{_claim(e.reply_claim)} | {e.summary} |"
        )
    lines += [
        "",
        "## Events",
        "",
        "| subject | payload | published by | read by | what |",
        "|---|---|---|---|---|",
    ]
    for ev in contract.events:
        lines.append(
            f"| `{ev.subject}` | [{ev.model.__name__}](#{ev.model.__name__.lower()}) "
            f"| {ev.publisher}{_claim(ev.claim)} | {ev.readers} | {ev.summary} |"
        )
    lines += [
        "",
        "## Buckets",
        "",
        "Hub KV buckets (JetStream domain `hub`); a host may write only these keys.",
        "",
        "| bucket | keys a host may write | what |",
        "|---|---|---|",
    ]
    for b in contract.buckets:
        keys = ", ".join(f"`{key}`" for key in b.writable)
        lines.append(f"| `{b.bucket}` | {keys} | {b.summary} |")
    lines += [
        "",
        "## Shared stores",
        "",
        "Hub stores any host may write anywhere in; their writers' own checks guard them.",
        "",
        "| store | kind | what |",
        "|---|---|---|",
    ]
    for store in contract.shared:
        lines.append(f"| `{store.name}` | {store.kind} | {store.summary} |")
    lines += ["", "## Models", ""]
    for model in _models(contract):
        lines += _model_section(model)
    return "\n".join(lines).rstrip() + "\n"


def json_schemas(contract: Contract = CONTRACT) -> dict[str, str]:
    """File name to JSON Schema text, one per model."""
    return {
        f"{model.__name__}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for model in _models(contract)
    }


def expected_files(docs_dir: Path) -> dict[Path, str]:
    """Every generated file and its content."""
    files = {docs_dir / "protocol.md": protocol_markdown()}
    files.update({docs_dir / "schemas" / n: t for n, t in json_schemas().items()})
    return files


def stale_files(docs_dir: Path) -> list[Path]:
    """Generated files that are missing, differ, or should not be there."""
    expected = expected_files(docs_dir)
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text() != text]
    schema_dir = docs_dir / "schemas"
    if schema_dir.exists():
        stale += [p for p in schema_dir.glob("*.json") if p not in expected]
    return sorted(stale)


def main(argv: list[str] | None = None) -> int:
    """Write the generated docs, or with ``--check`` report the stale ones."""
    parser = argparse.ArgumentParser(prog="python -m meshmind.bus.docs", description=__doc__)
    parser.add_argument("--docs-dir", type=Path, default=Path("docs"))
    parser.add_argument("--check", action="store_true", help="exit 1 if anything is stale")
    args = parser.parse_args(argv)
    stale = stale_files(args.docs_dir)
    if args.check:
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in args.docs_dir.joinpath("schemas").glob("*.json"):
        path.unlink()
    for path, text in expected_files(args.docs_dir).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(expected_files(args.docs_dir))} files under {args.docs_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
