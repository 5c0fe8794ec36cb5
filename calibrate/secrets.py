"""Keeping secrets out of everything calibrate writes or prints.

Credentials come only from each SDK's standard chain or the environment, but they still
reach calibrate's hands: as detector options (``--option api_key=...``, a plugin's
``auth``), inside URLs (``https://user:pass@host``), echoed in an SDK's error message or
a raw response. Redacting by key name alone misses all but the first, so secrets are
scrubbed *by value* too: every value of a secret-looking option, every value of a
credential variable in the environment, and the user-info part of every URL.

The store (settings, failure messages, raw responses), the run's log lines and the CLI's
error messages all pass through :func:`scrub` / :func:`redact`; reports and exports show
only what the store holds.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "known_secrets", "redact", "register_options",
           "register_secret", "scrub"]

REDACTED = "<redacted>"

#: Names that hold secrets: API keys, tokens, passwords, credentials, auth headers.
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|auth|private|session",
                          re.IGNORECASE)
#: ``scheme://user:pass@`` or ``scheme://token@``: the user-info goes, the host stays.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/@\s\"']+@", re.IGNORECASE)
#: Shorter values would scrub ordinary words ("true", "eu", a port) out of messages.
_MIN_LENGTH = 6

_lock = threading.Lock()
_registered: set[str] = set()


def is_secret_key(name: Any) -> bool:
    """True when a setting or variable called ``name`` holds a secret."""
    return bool(_SECRET_NAME.search(str(name)))


def register_secret(value: Any) -> None:
    """Scrub ``value`` (a string) from everything written or printed from now on."""
    if isinstance(value, str) and len(value) >= _MIN_LENGTH:
        with _lock:
            _registered.add(value)


def register_options(options: Mapping[str, Any]) -> None:
    """Register the values of secret-looking options and the user-info of URLs in any
    option (e.g. ``--option endpoint=https://user:pass@host``), recursively."""
    for key, value in options.items():
        if isinstance(value, Mapping):
            register_options(value)
        elif is_secret_key(key):
            register_secret(str(value))
        elif isinstance(value, str):
            for m in _URL_USERINFO.finditer(value):
                userinfo = m.group(0)[len(m.group("scheme")):-1]
                register_secret(userinfo)
                for part in userinfo.split(":"):
                    register_secret(part)


def known_secrets() -> list[str]:
    """Registered values and the values of credential variables in the environment,
    longest first (so a key is scrubbed before a prefix of it)."""
    env = {v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= _MIN_LENGTH}
    with _lock:
        values = _registered | env
    return sorted(values, key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with every known secret and every URL's user-info replaced by
    ``<redacted>``.

    Examples
    --------
    >>> scrub("GET https://bob:hunter22@example.com/x failed")
    'GET https://<redacted>@example.com/x failed'
    """
    if not text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-looking keys' values replaced and every string
    scrubbed, recursively through mappings and lists.

    Examples
    --------
    >>> redact({"region": "eu-west-1", "ApiKey": "abc", "nested": {"auth": 1}})
    {'region': 'eu-west-1', 'ApiKey': '<redacted>', 'nested': {'auth': '<redacted>'}}
    """
    if isinstance(value, Mapping):
        # A table under a secret-looking name ("auth": {"user", "password"}) is walked,
        # so its secret members go and the rest stays readable; anything else goes.
        return {k: (REDACTED if is_secret_key(k) and not isinstance(v, Mapping) else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value
