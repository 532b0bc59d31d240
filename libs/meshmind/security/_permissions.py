"""Per-host permissions derived from the protocol contract, and the hub's authorization file."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshmind.bus import INBOX_PREFIX, Contract, EventSpec, Message, Party, StoreKind, check_node_id
from meshmind.bus.protocol import CONTRACT

OPERATOR_USER = "operator"
"""The user of clients on the hub's own client port (the lab's control, meshctl): no host."""

_HEADER = "# meshmind hub authorization, generated from the protocol contract by `meshctl creds`."
_HOST_LINE = re.compile(
    r'^\s*# host (?P<node>[A-Za-z0-9_-]+)\n\s*\{ nkey: "(?P<key>U[A-Z2-7]+)"', re.M
)


@dataclass(frozen=True)
class HostPermissions:
    """What one host's leaf connection may send into the hub (publish) and receive (subscribe)."""

    node: str
    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...]
    subscribe_allow: tuple[str, ...]


_SERVICES_API = [f"$SRV.{verb}{tail}" for verb in ("PING", "INFO", "STATS") for tail in ("", ".>")]
"""The Services API's discovery requests: read-only, and what meshctl on a host lists with."""


def _unique(subjects: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))


def _stream_api(api: str, stream: str) -> list[str]:
    """The JetStream API calls that bind or create a stream, read it and follow it."""
    return [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.CREATE.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.DELETE.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _jetstream_subjects(node: str, contract: Contract, domain: str) -> list[str]:
    """The hub JetStream API calls a host needs for the stores the contract declares: bind or
    create them, read, watch, write its own keys of the per-host buckets (KV writes cross as
    ``$JS.<d>.API.$KV``) and anywhere in the shared stores; an object store replaces and
    removes objects by purging their chunks."""
    api = f"$JS.{domain}.API"
    subjects = [f"{api}.INFO"]
    for bucket in contract.buckets:
        subjects += _stream_api(api, f"KV_{bucket.bucket}")
        subjects += [f"{api}.$KV.{bucket.bucket}.{key}" for key in bucket.keys_of(node)]
    for store in contract.shared:
        subjects += _stream_api(api, store.stream)
        subjects += store.written_on(api)
        if store.kind is StoreKind.OBJECTS:  # reading an object looks its stream up by name
            subjects += [f"{api}.STREAM.PURGE.{store.stream}", f"{api}.STREAM.NAMES"]
    return subjects


def _denied(contract: Contract, domain: str) -> list[str]:
    """What no host may do to the hub's streams, whatever an allow says: delete or reconfigure
    any, purge or delete records of any but an object store (whose writes purge)."""
    api = f"$JS.{domain}.API"
    kept = [f"KV_{b.bucket}" for b in contract.buckets]
    kept += [s.stream for s in contract.shared if s.kind is not StoreKind.OBJECTS]
    deny = [f"{api}.STREAM.DELETE.>", f"{api}.STREAM.UPDATE.>"]
    deny += [f"{api}.STREAM.{verb}.{stream}" for stream in kept for verb in ("PURGE", "MSG.DELETE")]
    return deny


def _own_events(event: EventSpec[Message], node: str, hosts: Sequence[str] | None) -> list[str]:
    """The subjects of ``event`` that ``node`` may publish. Addressed to other hosts as well
    (``mesh.raft.{node}.to.{peer}``), each one of ``hosts`` is spelled out when they are
    known: the hub forwards a host's interest in ``mesh.raft.*.to.n1`` to n2's leaf only if
    n2 may publish a subject that pattern matches, and ``mesh.raft.n2.to.*`` is not one."""
    own = {event.parameters[0]: node}
    others = event.parameters[1:]
    if not others or hosts is None:
        return [event.pattern(**own)]
    return [
        event.pattern(**own, **dict(zip(others, chosen, strict=True)))
        for chosen in itertools.product(sorted(hosts), repeat=len(others))
    ]


def host_permissions(
    node: str,
    contract: Contract = CONTRACT,
    *,
    hub_domain: str = "hub",
    hosts: Sequence[str] | None = None,
) -> HostPermissions:
    """The permissions of ``node``'s leaf connection to the hub, from ``contract``.

    Publish: events the host may say (its own, or any host's), requests to endpoints any host
    may call, the Services API's discovery requests, replies, and its own keys in the hub's
    buckets. Subscribe (what the hub passes to the leaf): events the host may read, requests to
    the endpoints it serves, replies to its own inboxes only, and the Services API's discovery
    pings. ``hosts``: every host of the mesh,
    for the hub's side (see :func:`_own_events`).
    """
    check_node_id(node)
    publish = []
    subscribe = []
    for event in contract.events:
        if event.publisher is Party.NAMED_HOST:
            publish += _own_events(event, node, hosts)
        elif event.publisher is Party.ANY_HOST:
            publish.append(event.wildcard)
        if event.readers is Party.NAMED_HOST:
            subscribe.append(event.pattern(**{event.parameters[0]: node}))
        elif event.readers is Party.ANY_HOST:
            subscribe.append(event.wildcard)
    for endpoint in contract.endpoints:
        if endpoint.requesters is Party.ANY_HOST:
            publish.append(endpoint.wildcard)
        if endpoint.server is Party.NAMED_HOST:
            subscribe.append(endpoint.pattern(**{endpoint.parameters[0]: node}))
        elif endpoint.server is Party.ANY_HOST:
            subscribe.append(endpoint.wildcard)
    publish += [
        f"{INBOX_PREFIX}.>",
        *_SERVICES_API,
        *_jetstream_subjects(node, contract, hub_domain),
    ]
    subscribe += [f"{INBOX_PREFIX}.{node}.>", "$SRV.>"]
    deny = _denied(contract, hub_domain)
    return HostPermissions(node, _unique(publish), tuple(deny), _unique(subscribe))


def _subjects(subjects: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in subjects) + "]"


def _permission_block(permissions: HostPermissions) -> str:
    return (
        f"permissions: {{\n"
        f"        publish: {{\n"
        f"          allow: {_subjects(permissions.publish_allow)}\n"
        f"          deny: {_subjects(permissions.publish_deny)}\n"
        f"        }}\n"
        f"        subscribe: {{ allow: {_subjects(permissions.subscribe_allow)} }}\n"
        f"    }}"
    )


def _user_block(key: str, permissions: HostPermissions) -> str:
    return (
        f"    # host {permissions.node}\n"
        f'    {{ nkey: "{key}", allowed_connection_types: ["LEAFNODE"], '
        f"{_permission_block(permissions)} }}\n"
    )


def hub_authorization(
    host_keys: Mapping[str, str], contract: Contract = CONTRACT, *, hub_domain: str = "hub"
) -> str:
    """The hub's authorization include: one nkey user per host (node id to public key), each
    allowed only as a leaf connection with its generated permissions, and the operator as the
    user of credential-less clients on the hub's client port."""
    users = [
        f"    # {OPERATOR_USER}: clients of the hub's own client port; never a leaf\n"
        f'    {{ user: "{OPERATOR_USER}", allowed_connection_types: ["STANDARD"] }}\n'
    ]
    for node in sorted(host_keys):
        key = host_keys[node]
        if not re.fullmatch(r"U[A-Z2-7]{55}", key):
            raise ValueError(f"host {node!r}: {key!r} is not a public user nkey")
        permissions = host_permissions(node, contract, hub_domain=hub_domain, hosts=list(host_keys))
        users.append(_user_block(key, permissions))
    return (
        f"{_HEADER}\n# Do not edit: regenerate it when the contract or the hosts change.\n"
        f"authorization {{\n  timeout: 2\n  users = [\n{''.join(users)}  ]\n}}\n"
        f"no_auth_user: {OPERATOR_USER}\n"
    )


LEAF_SERVICES_USER = "services"
"""The user of every client of a host's own leaf: the host's services and tools."""


def leaf_authorization(node: str, contract: Contract = CONTRACT, *, hub_domain: str = "hub") -> str:
    """Host ``node``'s leaf authorization include: its clients get the very permissions its
    leaf connection has at the hub, so a publish or subscription the hub would drop is refused
    by the leaf, and the client that tried hears a "Permissions Violation"."""
    permissions = host_permissions(node, contract, hub_domain=hub_domain)
    return (
        f"{_HEADER}\n# Host {node}: its services' permissions on its own leaf.\n"
        f"authorization {{\n  timeout: 2\n  users = [\n"
        f'    {{ user: "{LEAF_SERVICES_USER}", allowed_connection_types: ["STANDARD"], '
        f"{_permission_block(permissions)} }}\n  ]\n}}\n"
        f"no_auth_user: {LEAF_SERVICES_USER}\n"
    )


def host_keys_in(authorization: str) -> dict[str, str]:
    """The hosts and public keys a generated authorization file lists."""
    return {m.group("node"): m.group("key") for m in _HOST_LINE.finditer(authorization)}


def authorization_is_current(
    authorization: str, contract: Contract = CONTRACT, *, hub_domain: str = "hub"
) -> bool:
    """Whether ``authorization`` is what the contract generates today for the hosts it lists."""
    hosts = host_keys_in(authorization)
    return bool(hosts) and authorization == hub_authorization(
        hosts, contract, hub_domain=hub_domain
    )
