"""Mesh security: per-host nkeys, the mesh CA and hub certificate, permissions from the contract."""

from meshmind.security._files import MeshCredentials, generate_credentials
from meshmind.security._nkeys import HostKey, host_key_from_seed, new_host_key
from meshmind.security._permissions import (
    LEAF_SERVICES_USER,
    OPERATOR_USER,
    HostPermissions,
    authorization_is_current,
    host_keys_in,
    host_permissions,
    hub_authorization,
    leaf_authorization,
)
from meshmind.security._tls import DEFAULT_HUB_NAMES, KeyAndCert, issue_server_cert, new_ca

__all__ = [
    "DEFAULT_HUB_NAMES",
    "LEAF_SERVICES_USER",
    "OPERATOR_USER",
    "HostKey",
    "HostPermissions",
    "KeyAndCert",
    "MeshCredentials",
    "authorization_is_current",
    "generate_credentials",
    "host_key_from_seed",
    "host_keys_in",
    "host_permissions",
    "hub_authorization",
    "issue_server_cert",
    "leaf_authorization",
    "new_ca",
    "new_host_key",
]
