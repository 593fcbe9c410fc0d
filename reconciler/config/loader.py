"""Loading a config file: TOML syntax, pydantic validation and kinds' cross-checks,
every problem reported as ``FILE:LINE:COL: message``, all at once."""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel, ValidationError
from tomlkit.exceptions import TOMLKitError

from reconciler.config.model import build_config_model
from reconciler.config.tomlpos import PositionedDocument, parse_with_positions
from reconciler.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:  # the engine is a layer above config: only its type is named here
    from reconciler.engine.kind import Kind

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class LoadedConfig:
    """A validated config and where it came from."""

    path: Path
    text: str
    document: PositionedDocument
    model: BaseModel

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def dotted(path: tuple[str | int, ...]) -> str:
    """A config path as TOML would write it: ``replicas."/mnt/backup".verify_every``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _BARE_KEY.match(part) else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
            text += ("." if text else "") + name
    return text


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated to the type that holds keys."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def allowed_keys(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """The keys the config accepts inside the table at ``path`` (empty when unknown)."""
    current: Any = model
    index = 0
    while index < len(path):
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(path[index]))
            if field is None:
                return []
            current = field.annotation
        elif origin in (dict, list, tuple):
            current = typing.get_args(current)[-1] if typing.get_args(current) else Any
        else:
            return []
        index += 1
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or name for name, field in current.model_fields.items()]
    return []


# Strict types: what to write instead of a value of the wrong TOML type.
STRICT_HINTS = {
    "bool_type": "write true or false (a TOML boolean, without quotes)",
    "int_type": "write a whole number (without quotes)",
    "string_type": "write a string in double quotes",
    "list_type": 'write a list, e.g. ["a", "b"]',
    "float_type": "write a number (without quotes)",
}


def _issue_for_error(
    error: dict[str, Any], file: str, document: PositionedDocument, model: type[BaseModel]
) -> ConfigIssue:
    location = tuple(error["loc"])
    line, col = document.position(location)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(location[-1])
        choices = allowed_keys(model, location[:-1])
        close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
        where = f" in [{dotted(location[:-1])}]" if len(location) > 1 else ""
        if close:
            hint = f"; did you mean '{close[0]}'?"
        elif choices:
            hint = f"; valid keys are: {', '.join(sorted(choices))}"
        else:
            hint = ""
        return ConfigIssue(file, line, col, f"unknown key '{key}'{where}{hint}")
    if kind == "missing":
        parent = f"[{dotted(location[:-1])}]" if len(location) > 1 else "the top level"
        return ConfigIssue(file, line, col, f"{parent} is missing the required key '{location[-1]}'")
    message = STRICT_HINTS.get(kind, str(error["msg"]))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    value = error.get("input")
    shown = f" = {value!r}" if isinstance(value, (str, int, float, bool)) else ""
    return ConfigIssue(file, line, col, f"{dotted(location)}{shown}: {message}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; create one with `reconciler init` or name another with --config"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from None


def syntax_issue(file: str, text: str, error: TOMLKitError) -> ConfigIssue:
    """A TOML syntax error as one located issue: tomlkit's message (the clearer one, e.g. 'Key
    "root" already exists.'), at the line and column Python's own TOML parser gives (tomlkit
    gives none for a duplicate key and column 0 for some errors)."""
    import tomllib

    message = re.sub(r" at line \d+ col \d+$", "", str(error))
    line, col = getattr(error, "line", 1) or 1, max(getattr(error, "col", 1) or 1, 1)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as other:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(other))
        if found:
            line, col = int(found.group(1)), int(found.group(2))
    return ConfigIssue(file, line, col, f"TOML syntax error: {message}")


def load_config(path: Path, kinds: list[Kind]) -> LoadedConfig:
    """Read, parse and validate a config file.

    Relative paths inside the config resolve against its directory.

    Raises ConfigError carrying every problem found (syntax errors stop at the
    first, as TOML parsing cannot go on past one).
    """
    text = _read_text(path)
    file = str(path)
    try:
        document = parse_with_positions(text)
    except TOMLKitError as error:
        raise ConfigError([syntax_issue(file, text, error)]) from None
    model_class = build_config_model(kinds)
    data = document.data()
    context = {"base_dir": path.parent}
    issues: list[ConfigIssue] = []
    try:
        model: BaseModel = model_class.model_validate(data, context=context)
        broken: set[str] = set()
    except ValidationError as error:
        details = error.errors()
        issues = [_issue_for_error(dict(detail), file, document, model_class) for detail in details]
        broken = {str(detail["loc"][0]) for detail in details if detail["loc"]}
        model = _partial_model(model_class, data, context, broken)
    for kind in kinds:
        if broken & set(kind.sections):
            continue  # its own sections have errors: its cross-checks would only repeat them
        for location, message in kind.check(model, path.parent):
            line, col = document.position(location)
            issues.append(ConfigIssue(file, line, col, message))
    if issues:
        raise ConfigError(sorted(set(issues), key=lambda issue: (issue.line, issue.col, issue.message)))
    return LoadedConfig(path=path, text=text, document=document, model=model)


def _partial_model(model_class: type[BaseModel], data: dict[str, Any], context: dict[str, Any],
                   broken: set[str]) -> BaseModel:
    """The config with every section that validated, the broken ones left at their defaults, so
    that the kinds whose sections are all valid can still check their cross-references (every
    problem is reported in one run)."""
    from pydantic import TypeAdapter

    values: dict[str, Any] = {}
    for key, field in model_class.model_fields.items():
        if key in broken or key not in data:
            values[key] = field.get_default(call_default_factory=True)
            continue
        annotation: Any = field.annotation
        values[key] = TypeAdapter(annotation).validate_python(data[key], context=context)
    return model_class.model_construct(**values)
