"""Reading scenario files: a YAML dialect without surprises, and typed field readers that name
the bad field.

Every reader takes the raw value and its *path* (``agents[3].skills.billing``) and either
returns a clean Python value or raises ``ScenarioError`` whose message starts with that path,
so an ops engineer can find the typo in a 300-line file.

YAML is read with a stricter resolver than PyYAML's YAML 1.1 default: ``08:00`` or ``12:30``
stay strings (YAML 1.1 would turn ``12:30`` into the sexagesimal integer 750) and only
``true``/``false`` are booleans (``no``, Norwegian, stays a language tag). JSON files are read
with the standard library.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from router.domain import SKILL_LEVEL_MAX, SKILL_LEVEL_MIN, Channel

DAY_S = 86_400
MAX_DURATION_S = 366 * DAY_S
"""A scenario's run: a year at most."""
MAX_TIME_S = 10_000_000.0
"""A handle time's or patience's mean or spread: about 116 days at most."""
MAX_RATE_PER_HOUR = 10_000_000.0
"""A stream's calls per hour: ten million at most (a run draws every one of them)."""


class ScenarioError(ValueError):
    """A scenario (or trace) is invalid. ``str(err)`` is ``"<field path>: <what is wrong>"``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


# --- YAML ------------------------------------------------------------------------------------

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalars (no sexagesimal numbers, no yes/no/on/off) that
    refuses a key given twice in one mapping (the last would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """``SafeLoader``'s mapping, after a check that no key repeats."""
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # SafeLoader refuses an unhashable key itself
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (line {line})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in {_INT, _FLOAT, _BOOL}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"
        r"|^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"
        r"|^[-+]?[0-9][0-9_]*\.$"
        r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def read_document(path: Path) -> object:
    """Parse a ``.yaml``/``.yml`` or ``.json`` file (by suffix) into plain Python values."""
    try:
        text = read_text(path)
    except FileNotFoundError as err:
        raise ScenarioError("", f"cannot read {path}: {err.strerror or err}") from err
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=_unique_keys)
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except (yaml.YAMLError, json.JSONDecodeError, _RepeatedKeyError) as err:
        raise ScenarioError("", f"{path} is not valid {_kind(path)}: {err}") from err


def read_text(path: Path, *, bom: bool = False) -> str:
    """A file's UTF-8 text (``bom``: without the byte order mark a spreadsheet's "CSV
    UTF-8" starts with, if any); ``ScenarioError`` naming the file when it cannot be read (a
    directory, no permission) or is not UTF-8. A missing file stays ``FileNotFoundError``."""
    try:
        return path.read_text(encoding="utf-8-sig" if bom else "utf-8")
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ScenarioError("", f"cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ScenarioError("", f"{path} is not UTF-8 text (byte {err.start})") from err


class _RepeatedKeyError(ValueError):
    """A JSON object gives a key twice."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``json.loads``' object, after a check that no key repeats."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKeyError(f"{key!r} is given twice")
        out[key] = value
    return out


def _kind(path: Path) -> str:
    return "JSON" if path.suffix.lower() == ".json" else "YAML"


# --- paths -----------------------------------------------------------------------------------


def child(path: str, key: str) -> str:
    """Path of ``key`` inside the mapping at ``path``."""
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    """Path of element ``index`` of the list at ``path``."""
    return f"{path}[{index}]"


# --- readers ---------------------------------------------------------------------------------


def mapping(value: object, path: str, allowed: Collection[str] | None = None) -> dict[str, object]:
    """A mapping with string keys; with ``allowed``, unknown keys are refused (with a hint)."""
    if not isinstance(value, Mapping):
        raise ScenarioError(path, f"expected a mapping, got {_describe(value)}")
    result: dict[str, object] = {}
    for key, val in value.items():
        if not isinstance(key, str):
            raise ScenarioError(child(path, str(key)), "keys must be strings (quote it)")
        if allowed is not None and key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ScenarioError(
                child(path, key), f"unknown field (known: {', '.join(sorted(allowed))}){extra}"
            )
        result[key] = val
    return result


def sequence(value: object, path: str) -> list[object]:
    """A list."""
    if not isinstance(value, list):
        raise ScenarioError(path, f"expected a list, got {_describe(value)}")
    return list(value)


def string(value: object, path: str, *, allow_empty: bool = True) -> str:
    """A string (numbers are not silently converted)."""
    if not isinstance(value, str):
        raise ScenarioError(path, f"expected a string, got {_describe(value)}")
    if not allow_empty and not value.strip():
        raise ScenarioError(path, "must not be empty")
    return value


_NAME = re.compile(r"^[a-z0-9_.-]{1,64}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$")


def name(value: object, path: str, what: str = "name") -> str:
    """A lower-case identifier of 1-64 of a-z, 0-9 and ``_.-`` (skills, teams, regions)."""
    text = string(value, path).strip().lower()
    if not _NAME.fullmatch(text):
        raise ScenarioError(path, f"{value!r} is not a valid {what} (1-64 of a-z, 0-9, _.-)")
    return text


def identifier(value: object, path: str) -> str:
    """An agent or call id: 1-128 printable characters without spaces or commas."""
    text = string(value, path)
    if not text or len(text) > 128 or any(ch.isspace() or ch in ",;\"'" for ch in text):
        raise ScenarioError(path, f"{value!r} is not a valid id (1-128 characters, no spaces)")
    return text


def language(value: object, path: str) -> str:
    """A language tag such as ``en`` or ``pt-br`` (lower-cased)."""
    tag = string(value, path).strip().lower()
    if not _LANGUAGE.fullmatch(tag):
        raise ScenarioError(path, f"{value!r} is not a language tag such as en or pt-br")
    return tag


def boolean(value: object, path: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ScenarioError(path, f"expected true or false, got {_describe(value)}")
    return value


def integer(value: object, path: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer within ``[low, high]`` (a float with no fraction is accepted)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(path, f"expected an integer, got {_describe(value)}")
    _bounds(value, path, low, high)
    return value


def number(
    value: object,
    path: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite number within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(path, f"expected a number, got {_describe(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ScenarioError(path, "must be a finite number")
    if low_open and low is not None and result <= low:
        raise ScenarioError(path, f"{value} must be greater than {low:g}")
    _bounds(result, path, low, high)
    return result


def skill_level(value: object, path: str) -> int:
    """A skill level 1..10."""
    level = integer(value, path)
    if not SKILL_LEVEL_MIN <= level <= SKILL_LEVEL_MAX:
        raise ScenarioError(path, f"level {level} is not in {SKILL_LEVEL_MIN}..{SKILL_LEVEL_MAX}")
    return level


def channel(value: object, path: str) -> Channel:
    """A channel name: voice, chat, email, whatsapp or social."""
    text = string(value, path).strip().lower()
    try:
        return Channel(text)
    except ValueError:
        known = ", ".join(c.value for c in Channel)
        raise ScenarioError(path, f"{value!r} is not a channel ({known})") from None


_CLOCK = re.compile(r"^(?:(\d+)d\s*)?(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?$")


def time_point(value: object, path: str) -> float:
    """Seconds since the simulation start: a number of seconds, or ``"HH:MM[:SS]"`` on day 0,
    or ``"<N>d HH:MM[:SS]"`` on day N (``"1d 08:00"`` is 32 hours in)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number(value, path, low=0)
    text = string(value, path).strip()
    match = _CLOCK.fullmatch(text)
    if not match:
        raise ScenarioError(path, f"{value!r} is not a time: use seconds, 'HH:MM' or '1d HH:MM'")
    days, hours, minutes, seconds = match.groups()
    if int(hours) > 24 or int(minutes) > 59 or float(seconds or 0) >= 60:
        raise ScenarioError(path, f"{value!r} is not a valid clock time")
    total = int(days or 0) * DAY_S + int(hours) * 3600 + int(minutes) * 60 + float(seconds or 0)
    if int(hours) == 24 and total % DAY_S != 0:
        raise ScenarioError(path, f"{value!r} is not a valid clock time")
    return total


def time_of_day(value: object, path: str) -> float:
    """Seconds after midnight, 0..86400: ``"HH:MM[:SS]"`` or a number of seconds."""
    seconds = time_point(value, path)
    if seconds > DAY_S:
        raise ScenarioError(path, f"{value!r} is not a time of day (00:00 .. 24:00)")
    return seconds


def _bounds(value: float, path: str, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise ScenarioError(path, f"{value:g} is below the minimum {low:g}")
    if high is not None and value > high:
        raise ScenarioError(path, f"{value:g} is above the maximum {high:g}")


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
