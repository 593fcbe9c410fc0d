"""A small DOM reader for report tests: elements with their attributes, in document order, and text."""

from __future__ import annotations

from html.parser import HTMLParser


class Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attributes: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.elements if name == tag
                and all(attrs.get(key.replace("_", "-")) == value for key, value in attributes.items())]


def parse_html(text: str) -> Dom:
    dom = Dom()
    dom.feed(text)
    return dom
