"""Per-host permissions derived from the protocol contract, and the hub's authorization file."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from meshmind.bus._contract import Contract, Party
from meshmind.bus._settings import check_node_id
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


def _unique(subjects: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))


def _jetstream_subjects(node: str, contract: Contract, domain: str) -> list[str]:
    """The hub JetStream API calls a host needs for the buckets the contract declares: bind or
    create them, read, watch, and write its own keys (KV writes cross as ``$JS.<d>.API.$KV``)."""
    api = f"$JS.{domain}.API"
    subjects = [f"{api}.INFO"]
    for bucket in contract.buckets:
        stream = f"KV_{bucket.bucket}"
        subjects += [
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
        subjects += [f"{api}.$KV.{bucket.bucket}.{key}" for key in bucket.keys_of(node)]
    return subjects


def host_permissions(
    node: str, contract: Contract = CONTRACT, *, hub_domain: str = "hub"
) -> HostPermissions:
    """The permissions of ``node``'s leaf connection to the hub, from ``contract``.

    Publish: events the host may say (its own, or any host's), requests to endpoints any host
    may call, replies, and its own keys in the hub's buckets. Subscribe (what the hub passes to
    the leaf): events the host may read, requests to the endpoints it serves, replies, and the
    Services API's discovery pings.
    """
    check_node_id(node)
    publish = []
    subscribe = []
    for event in contract.events:
        if event.publisher is Party.NAMED_HOST:
            publish.append(event.pattern(**{event.parameters[0]: node}))
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
    publish += ["_INBOX.>", *_jetstream_subjects(node, contract, hub_domain)]
    subscribe += ["_INBOX.>", "$SRV.>"]
    api = f"$JS.{hub_domain}.API"
    deny = [f"{api}.STREAM.{verb}.>" for verb in ("DELETE", "PURGE", "UPDATE", "MSG.DELETE")]
    return HostPermissions(node, _unique(publish), tuple(deny), _unique(subscribe))


def _subjects(subjects: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in subjects) + "]"


def _user_block(key: str, permissions: HostPermissions) -> str:
    return (
        f"    # host {permissions.node}\n"
        f'    {{ nkey: "{key}", allowed_connection_types: ["LEAFNODE"], permissions: {{\n'
        f"        publish: {{\n"
        f"          allow: {_subjects(permissions.publish_allow)}\n"
        f"          deny: {_subjects(permissions.publish_deny)}\n"
        f"        }}\n"
        f"        subscribe: {{ allow: {_subjects(permissions.subscribe_allow)} }}\n"
        f"    }} }}\n"
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
        users.append(_user_block(key, host_permissions(node, contract, hub_domain=hub_domain)))
    return (
        f"{_HEADER}\n# Do not edit: regenerate it when the contract or the hosts change.\n"
        f"authorization {{\n  timeout: 2\n  users = [\n{''.join(users)}  ]\n}}\n"
        f"no_auth_user: {OPERATOR_USER}\n"
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
