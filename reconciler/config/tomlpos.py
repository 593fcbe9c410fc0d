"""TOML parsing with source positions for every key.

tomlkit parses TOML while keeping comments and layout, but it does not say
where in the file a key stood. ``parse_with_positions`` runs tomlkit's own
parser with two hooks that note the source offset at which each key/value and
each table header starts, then walks the resulting document to map every key
path (``("replicas", "/mnt/backup", "verify_every")``) to ``(line, column)``,
both 1-based.
"""

from __future__ import annotations

import bisect
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Array, InlineTable, Item, Table
from tomlkit.parser import Parser
from tomlkit.toml_document import TOMLDocument

Path = tuple[str | int, ...]


class _RecordingParser(Parser):
    """tomlkit's parser, noting where each value and each table header begins.

    Values are noted by identity (tomlkit keeps value objects as parsed); table
    headers by their full dotted name, because tomlkit copies and merges table
    objects when it builds implicit parent tables.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.offsets: dict[int, int] = {}
        self.headers: dict[Path, int] = {}
        self._keys: list[Any] = []
        self._aot_starts: dict[Path, list[int]] = {}

    def _parse_key(self):  # type: ignore[no-untyped-def]
        key = super()._parse_key()
        self._keys.append(key)
        return key

    def _parse_key_value(self, parse_comment: bool = False):  # type: ignore[no-untyped-def]
        start = self._idx
        key, value = super()._parse_key_value(parse_comment)
        self.offsets[id(value)] = start + len(value.trivia.indent)
        return key, value

    def _parse_table(self, parent_name=None, parent=None):  # type: ignore[no-untyped-def]
        start = self._idx
        first_key = len(self._keys)
        is_aot = self._src[start : start + 2] == "[["
        key, table = super()._parse_table(parent_name, parent)
        header: Path = tuple(part.key for part in self._keys[first_key])
        if is_aot:
            # Elements of an array of tables may finish parsing out of source
            # order (tomlkit nests the sibling parse); index them by offset later.
            self._aot_starts.setdefault(header, []).append(start)
        else:
            self.headers.setdefault(header, start)
        return key, table

    def parse(self):  # type: ignore[no-untyped-def]
        document = super().parse()
        for header, starts in self._aot_starts.items():
            for index, start in enumerate(sorted(set(starts))):
                self.headers.setdefault(header + (index,), start)
        return document


class PositionedDocument:
    """A parsed TOML document plus a lookup from key paths to (line, column)."""

    def __init__(self, text: str):
        parser = _RecordingParser(text)
        self.document: TOMLDocument = parser.parse()
        self._line_starts = [0] + [index + 1 for index, char in enumerate(text) if char == "\n"]
        self._positions: dict[Path, int] = dict(parser.headers)
        self._walk_container(self.document, (), parser.offsets)
        # Implicit (super) tables such as [replicas] in `[replicas."/mnt/x"]` have no
        # header of their own: give them the position of their first descendant.
        for path, offset in sorted(self._positions.items(), key=lambda pair: pair[1]):
            for cut in range(1, len(path)):
                self._positions.setdefault(path[:cut], offset)

    def _record(self, path: Path, item: Any, offsets: dict[int, int]) -> None:
        offset = offsets.get(id(item))
        if offset is not None and path not in self._positions:
            self._positions[path] = offset

    def _walk_container(self, container: Container, path: Path, offsets: dict[int, int]) -> None:
        for key, item in container.body:
            if key is None:
                continue
            self._walk_item(path + tuple(part.key for part in key), item, offsets)

    def _walk_item(self, path: Path, item: Item, offsets: dict[int, int]) -> None:
        self._record(path, item, offsets)
        if isinstance(item, (Table, InlineTable)):
            self._walk_container(item.value, path, offsets)
        elif isinstance(item, AoT):
            for index, table in enumerate(item.body):
                self._record(path + (index,), table, offsets)
                self._walk_container(table.value, path + (index,), offsets)
        elif isinstance(item, Array):
            for index, element in enumerate(item):
                if isinstance(element, InlineTable):
                    self._walk_item(path + (index,), element, offsets)

    def position(self, path: Path) -> tuple[int, int]:
        """(line, column), 1-based, of the deepest key of ``path`` present in the file.

        A path that does not exist (a missing key) falls back to its nearest
        existing parent; the empty path is the start of the file.
        """
        for cut in range(len(path), 0, -1):
            offset = self._positions.get(tuple(path[:cut]))
            if offset is not None:
                line_index = bisect.bisect_right(self._line_starts, offset) - 1
                return line_index + 1, offset - self._line_starts[line_index] + 1
        return 1, 1

    def data(self) -> dict[str, Any]:
        """The document as plain Python values (dicts, lists, str, int...)."""
        return self.document.unwrap()


def parse_with_positions(text: str) -> PositionedDocument:
    """Parse TOML text, keeping positions.

    Raises tomlkit.exceptions.ParseError (with ``.line`` and ``.col``) on bad syntax.
    """
    return PositionedDocument(text)


__all__ = ["PositionedDocument", "parse_with_positions", "tomlkit"]
