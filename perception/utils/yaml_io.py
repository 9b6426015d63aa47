"""The one YAML reader of the package (rigs, cameras, train configs, demo settings).

Safe loading (plain data only), and no aliases: nested ``*name`` references ("billion laughs")
expand a 600-byte file into gigabytes once the data is walked, and none of our files needs them.
An alias is refused while composing, before anything is built, so a hostile file costs no more
than its size. Errors name the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["YAMLInputError", "load_yaml"]


class YAMLInputError(ValueError):
    """A YAML file is unreadable, not valid YAML, or uses a construct we refuse (aliases)."""


class _AliasRefused(yaml.MarkedYAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` that stops at the first alias event, before composing or constructing it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(problem=f"YAML aliases (*{event.anchor}) are not allowed",
                                       problem_mark=event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(source: str | Path, where: str | Path | None = None) -> Any:
    """Parse YAML safely: ``source`` is a file (``Path``) or the text itself (``str``); ``where``
    names it in errors (default: the path, or ``<string>``).

    Raises :class:`YAMLInputError` ("``where``: YAML aliases (*name) are not allowed at line L",
    "``where``: not valid YAML at line L: ...", or an unreadable file); ``FileNotFoundError``
    when the file does not exist.
    """
    if isinstance(source, Path):
        where = source if where is None else where
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise YAMLInputError(f"{where}: not valid YAML (not UTF-8 text: {exc.reason} at byte {exc.start})") \
                from None
    else:
        text = source
        where = "<string>" if where is None else where
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        if isinstance(exc, _AliasRefused):
            raise YAMLInputError(f"{where}: {exc.problem}{line}") from None
        raise YAMLInputError(f"{where}: not valid YAML{line}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YAMLInputError(f"{where}: not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    except RecursionError:
        raise YAMLInputError(f"{where}: not valid YAML: nested too deeply") from None
