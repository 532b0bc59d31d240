"""Masking secrets (nkey seeds, URL passwords, private keys) in text and structlog events."""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

MASK = "[redacted]"

_SEED = re.compile(r"\bS[A-Z][A-Z2-7]{56}\b")
"""An nkey seed: ``S``, the key's role, then 56 base32 characters."""
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*(?=@)")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)
_SECRET_KEYS = frozenset({"password", "seed", "nkey_seed", "secret", "token", "private_key"})


def redact(text: str) -> str:
    """``text`` with every nkey seed, URL password and private key replaced by a mask."""
    text = _PRIVATE_KEY.sub(MASK, text)
    text = _SEED.sub(MASK, text)
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: MASK if k in _SECRET_KEYS else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clean(v) for v in value)
    if isinstance(value, BaseException):
        return redact(repr(value))
    return value


def redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: masks secrets in every value, and whole values of secret keys."""
    for key, value in list(event.items()):
        event[key] = MASK if key in _SECRET_KEYS else _clean(value)
    return event
