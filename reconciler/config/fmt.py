"""``reconciler fmt``: normalise a config's layout with tomlkit, keeping comments and order.

What changes: ``key = value`` spacing, indentation of keys and table headers,
trailing spaces, runs of blank lines (one at most), a blank line before each
table, literal strings that need no escaping become basic ("double-quoted")
strings, and the file ends with one newline. What never changes: the data (the
result is re-parsed and compared), key order and comments.
"""

from __future__ import annotations

import re

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Array, InlineTable, Item, String, StringType, Table, Whitespace

from reconciler.errors import ConfigError


def _normalise_string(item: String) -> Item:
    if item.type == StringType.SLL and "\\" not in item.value and '"' not in item.value and item.value.isprintable():
        basic = String.from_raw(item.value, StringType.SLB)
        basic.trivia.indent = item.trivia.indent
        basic.trivia.comment_ws = item.trivia.comment_ws
        basic.trivia.comment = item.trivia.comment
        basic.trivia.trail = item.trivia.trail
        return basic
    return item


def _rebuilt(item: Item) -> Item:
    """A single-line array or inline table re-created from its values, so spacing
    and quoting become uniform (``["a", "b"]``, ``{ a = 1, b = 2 }``)."""
    value = item.unwrap()
    fresh: Item = tomlkit.item(value)
    if isinstance(item, InlineTable):
        fresh = tomlkit.parse(f"x = {_inline_text(value)}\n")["x"]
    fresh.trivia.indent = item.trivia.indent
    fresh.trivia.comment_ws = item.trivia.comment_ws
    fresh.trivia.comment = item.trivia.comment
    fresh.trivia.trail = item.trivia.trail
    return fresh


def _inline_text(value: object) -> str:
    """A value as one line of TOML, inline tables with a space inside the braces (as taplo and
    the TOML documentation write them)."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{tomlkit.key(str(k)).as_string()} = {_inline_text(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline_text(v) for v in value) + "]"
    return tomlkit.item(value).as_string()


def _single_line(item: Item) -> bool:
    return "\n" not in item.as_string() and "#" not in item.as_string()


def _normalise_container(container: Container, inline: bool = False) -> None:
    body = container.body
    for index, (key, item) in enumerate(body):
        if isinstance(item, Whitespace):
            if not inline:
                collapsed = re.sub(r"[ \t]*\n(?:[ \t]*\n)+", "\n", item.value)
                item._s = re.sub(r"[ \t]+(?=\n)", "", collapsed)
            continue
        if not inline:
            item.trivia.indent = ""
            item.trivia.trail = item.trivia.trail.lstrip(" \t")
            if item.trivia.comment:
                item.trivia.comment_ws = item.trivia.comment_ws or " "
        if key is not None and not isinstance(item, (Table, AoT)):
            key.sep = " = "
            for part in key:
                part._original = part.as_string().strip()
            if hasattr(key, "_original"):
                key._original = key.as_string().strip()
        if isinstance(item, String):
            body[index] = (key, _normalise_string(item))
        elif isinstance(item, Table):
            _normalise_container(item.value)
        elif isinstance(item, AoT):
            for table in item.body:
                table.trivia.indent = ""
                _normalise_container(table.value)
        elif isinstance(item, (Array, InlineTable)) and _single_line(item):
            body[index] = (key, _rebuilt(item))


def _blank_line_before_tables(text: str) -> str:
    lines = text.split("\n")
    output: list[str] = []
    for line in lines:
        is_header = line.startswith("[")
        if is_header and output and output[-1].strip() != "" and not output[-1].lstrip().startswith("#"):
            output.append("")
        output.append(line)
    return "\n".join(output)


def format_toml(text: str, name: str = "<config>") -> str:
    """The normalised form of ``text``.

    Raises ConfigError when the text is not valid TOML, or (a bug) when
    normalising would change the data.
    """
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as error:
        from reconciler.config.loader import syntax_issue

        issue = syntax_issue(name, text, error)
        raise ConfigError(f"{issue.file}:{issue.line}:{issue.col}: {issue.message}; fix it before formatting") from None
    before = document.unwrap()
    _normalise_container(document)
    result = _blank_line_before_tables(document.as_string())
    result = result.strip("\n") + "\n"
    if tomlkit.parse(result).unwrap() != before:
        raise ConfigError(f"{name}: formatting would change the data; the file was left as it is (please report this)")
    return result
