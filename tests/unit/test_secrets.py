"""No password reaches any output: the redaction is checked by properties over generated
connection strings (any scheme and letter case, passwords with reserved characters), and the
remembered-password path over driver messages that quote a password without its URL."""

from __future__ import annotations

import os
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import secrets
from reconciler.secrets import has_password, password_of, redact, remember, safe_environment

SCHEMES = st.sampled_from(["mongodb", "MONGODB", "MongoDB", "mongodb+srv", "postgresql+psycopg", "postgres",
                           "Postgresql", "redis", "amqp"])
USERS = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
# anything printable but white space and quotes: reserved characters included, unescaped
PASSWORDS = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&()*+,-./:;=?@[]^_{|}~\\", min_size=1,
                    max_size=24)
HOSTS = st.sampled_from(["db.example.org", "127.0.0.1:27017", "h1:27017,h2:27018", "[::1]:5432", "localhost"])
TAILS = st.sampled_from(["", "/", "/meteor", "/meteor?authSource=admin", "/db?replicaSet=rs0&w=majority"])
AROUND = st.sampled_from([("", ""), ("cannot reach ", ": timed out"), ("uri = \"", "\""), ("'", "'"),
                          ("<td>", "</td>"), ("url=", "\nnext line user@example.org")])


@given(SCHEMES, USERS, PASSWORDS, HOSTS, TAILS, AROUND)
@settings(max_examples=400, deadline=None)
def test_the_password_of_any_url_is_replaced_exactly(scheme, user, password, host, tail, around):
    before, after = around
    text = f"{before}{scheme}://{user}:{password}@{host}{tail}{after}"
    assert redact(text) == f"{before}{scheme}://{user}:***@{host}{tail}{after}"
    assert password_of(f"{scheme}://{user}:{password}@{host}{tail}") == password
    assert has_password(f"{scheme}://{user}:{password}@{host}{tail}")


@given(SCHEMES, HOSTS, TAILS)
def test_urls_without_a_password_are_left_alone(scheme, host, tail):
    for text in (f"{scheme}://{host}{tail}", f"{scheme}://user@{host}{tail}", f"see {scheme}://{host}{tail} now"):
        assert redact(text) == text
        assert not has_password(text)


def test_a_password_with_white_space_is_redacted_up_to_its_at_sign():
    assert redact("cannot reach mongodb://u:pa ss word@host:1/x: refused") == \
        "cannot reach mongodb://u:***@host:1/x: refused"
    assert redact("mongodb://host:27017 is down; mail admin@example.org") == \
        "mongodb://host:27017 is down; mail admin@example.org"


def test_several_urls_in_one_text():
    text = "from MONGODB://a:p1@h1/x to postgresql+psycopg://b:p@2@h2:5432/y"
    assert redact(text) == "from MONGODB://a:***@h1/x to postgresql+psycopg://b:***@h2:5432/y"


@given(PASSWORDS.filter(lambda p: len(p) >= secrets.MIN_REMEMBERED))
@settings(max_examples=100, deadline=None)
def test_a_remembered_password_is_removed_wherever_it_is_quoted(password):
    remember(f"mongodb://alice:{password}@db:27017/meteor")
    message = f"Port must be an integer between 0 and 65535: {password!r} ({password})"
    assert password not in redact(message)


def test_hooks_get_no_variable_holding_a_password(monkeypatch):
    monkeypatch.setenv("SOME_DB_URI", "MongoDB://svc:hunter2hunter2@db/x")
    monkeypatch.setenv("NAMED_BY_CONFIG", "opaque-token-value")
    monkeypatch.setenv("HARMLESS", "mongodb://db:27017/x")
    secrets.remember_variable("NAMED_BY_CONFIG")
    environment = safe_environment()
    assert "SOME_DB_URI" not in environment and "NAMED_BY_CONFIG" not in environment
    assert environment["HARMLESS"] == "mongodb://db:27017/x" and environment["PATH"] == os.environ["PATH"]
