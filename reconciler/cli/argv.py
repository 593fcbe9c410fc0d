"""The command line before click reads it (standard library only: the entry point's replay of a
no-change memo uses it too)."""

from __future__ import annotations

GLOBAL_WITH_VALUE = ("--config", "--state", "--log-format")
GLOBAL_FLAGS = ("-v", "-vv", "-vvv", "--verbose")


def global_options_first(argv: list[str]) -> list[str]:
    """``argv`` with the global options (``--config``, ``--state``, ``--log-format``, ``-v``) that
    follow the command moved before it, so ``reconciler plan --config x.toml`` works as
    ``reconciler --config x.toml plan`` (no command has options of those names). Nothing after
    ``--`` moves."""
    head: list[str] = []
    words = list(argv)
    index = 0
    while index < len(words) and words[index].startswith("-"):  # options before the command
        takes_value = words[index] in GLOBAL_WITH_VALUE
        head.append(words[index])
        if takes_value and index + 1 < len(words):
            head.append(words[index + 1])
            index += 1
        index += 1
    if index >= len(words):
        return list(argv)
    command, rest = words[index], words[index + 1:]
    moved: list[str] = []
    kept: list[str] = []
    position = 0
    while position < len(rest):
        word = rest[position]
        if word == "--":
            kept.extend(rest[position:])
            break
        name = word.split("=", 1)[0]
        if name in GLOBAL_WITH_VALUE:
            if "=" in word:
                moved.append(word)
            elif position + 1 < len(rest):
                moved.extend(rest[position:position + 2])
                position += 1
            else:
                kept.append(word)
        elif word in GLOBAL_FLAGS:
            moved.append(word)
        else:
            kept.append(word)
        position += 1
    return head + moved + [command] + kept
