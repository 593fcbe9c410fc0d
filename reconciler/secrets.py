"""Keeping secrets out of everything reconciler writes: plans, logs, errors, the journal,
reports and metrics.

Two mechanisms, both applied by ``redact``:

- **By structure.** Every ``scheme://`` URL in a text (any scheme, any letter case:
  ``MONGODB://``, ``mongodb+srv://``, ``postgresql+psycopg://``) has the password in its
  user information replaced by ``***``. The user information ends at the *last* ``@`` of
  the URL (a password may hold an unescaped ``@``, ``/``, ``:`` or ``?``), and the URL ends at
  white space or a quote. The user name is kept (an error should say who failed to log in).
- **By value.** Every connection string reconciler resolves goes through ``remember``,
  which records its password (as written and percent-decoded); ``redact`` then replaces any
  occurrence of a remembered password anywhere in a text, as a driver's error message may
  quote a piece of a malformed URL without its scheme. Passwords shorter than
  ``MIN_REMEMBERED`` characters are only redacted by structure (replacing every ``ab`` in
  a message would make it unreadable without protecting much).

Standard library only: the entry point's fast paths may use it.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, unquote_plus

MASK = "***"
MIN_REMEMBERED = 4
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_BODY = re.compile(r"[^ \t\r\n\"'<>`]*")  # a URL ends at white space or a quote
_remembered: set[str] = set()
_secret_variables: set[str] = set()


def _userinfo(url: str) -> tuple[int, int] | None:
    """(start, end) of the user information in ``url`` (a URL from its scheme to its end): what
    lies between ``://`` and the last ``@``; None without one."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    at = url.rfind("@")
    return None if at < scheme.end() else (scheme.end(), at)


def userinfo_span(url: str) -> tuple[int, int] | None:
    """(start, end) of the password in ``url`` (a URL from its scheme to its end), or None when
    it has none."""
    found = _userinfo(url)
    if found is None:
        return None
    colon = url.find(":", found[0], found[1])
    return None if colon < 0 else (colon + 1, found[1])


def password_of(url: str) -> str | None:
    """The password a connection string carries (as written), or None."""
    span = userinfo_span(url.strip())
    return None if span is None else url.strip()[span[0]:span[1]]


def user_of(url: str) -> str | None:
    """The user name a connection string carries (percent-decoded), or None."""
    url = url.strip()
    found = _userinfo(url)
    return None if found is None else unquote(url[found[0]:found[1]].split(":", 1)[0]) or None


def remember(url: str | None) -> None:
    """Record the password of ``url`` (a connection string reconciler is about to use), so that
    ``redact`` removes it from any text, however it is quoted."""
    password = password_of(url or "")
    if not password:
        return
    for form in (password, unquote(password), unquote_plus(password)):
        if len(form) >= MIN_REMEMBERED:
            _remembered.add(form)


def _redact_urls(text: str) -> str:
    pieces: list[str] = []
    position = 0
    for match in _SCHEME.finditer(text):
        start = match.start()
        if start < position:
            continue  # inside a URL already handled
        end = _URL_BODY.match(text, match.end()).end()  # type: ignore[union-attr]  # always matches
        span = userinfo_span(text[start:end])
        if span is None:
            # a password with white space in it: the URL seems to end early; its user
            # information then runs to an '@' later on the same line
            line_end = text.find("\n", end)
            line_end = len(text) if line_end < 0 else line_end
            at = text.rfind("@", end, line_end)
            colon = text.find(":", match.end(), end)
            if at > 0 and colon > 0 and not text[colon + 1:end].isdigit():
                span = (colon + 1 - start, at - start)
        if span is None:
            continue
        pieces.append(text[position:start + span[0]])
        pieces.append(MASK)
        position = start + span[1]
    pieces.append(text[position:])
    return "".join(pieces)


def redact(text: str) -> str:
    """``text`` with every password removed (see the module docstring)."""
    if not text:
        return text
    result = _redact_urls(text) if "://" in text else text
    for secret in sorted(_remembered, key=len, reverse=True):
        if secret in result:
            result = result.replace(secret, MASK)
    return result


def has_password(url: str) -> bool:
    """True when the connection string ``url`` carries a password (any scheme, any case)."""
    return bool(password_of(url))


def remember_secret(value: str | None) -> None:
    """Record a secret value itself (e.g. a user's initial password read from its environment
    variable), so that ``redact`` removes it from any text."""
    if value and len(value) >= MIN_REMEMBERED:
        _remembered.add(value)


def forget_all() -> None:
    """Forget every remembered secret: one process, one run, except in a test process that runs
    many runs (tests/conftest.py), where one test's secret must not redact the next one's output."""
    _remembered.clear()
    _secret_variables.clear()


def remember_variable(name: str | None) -> None:
    """Record that the environment variable ``name`` holds a secret (a connection string named by
    a ``*_env`` key), and remember the password its value carries."""
    if not name:
        return
    _secret_variables.add(name)
    remember(os.environ.get(name))


def safe_environment() -> dict[str, str]:
    """This process's environment without the variables that hold secrets: those recorded by
    ``remember_variable`` and any whose value is a URL carrying a password. For programs
    reconciler starts that need none of them (hooks)."""
    return {name: value for name, value in os.environ.items()
            if name not in _secret_variables and not has_password(value)}
