"""Typed access to fields of an untrusted JSON report.

Every accessor names the report file and the JSON path of the field in its error, so a user can
find the bad value. Missing optional fields and JSON null read as the given default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from suture.errors import ReportError


def describe(path: str, where: str) -> str:
    """Return the prefix of an error message: the report file and the JSON path inside it."""
    return f"{path}: {where}" if where else path


def as_object(value: Any, path: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReportError(
            f"{describe(path, where)} is {_json_type(value)}, expected an object. "
            "Pass the scanner's unmodified JSON output"
        )
    return value


def as_list(value: Any, path: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ReportError(
            f"{describe(path, where)} is {_json_type(value)}, expected an array. "
            "Pass the scanner's unmodified JSON output"
        )
    return value


def get_object(obj: Mapping[str, Any], key: str, path: str, where: str) -> Mapping[str, Any]:
    """Return `obj[key]` as an object, or an empty mapping when it is missing or null."""
    value = obj.get(key)
    if value is None:
        return {}
    return as_object(value, path, f"{where}.{key}" if where else key)


def get_list(obj: Mapping[str, Any], key: str, path: str, where: str) -> list[Any]:
    """Return `obj[key]` as a list, or an empty list when it is missing or null."""
    value = obj.get(key)
    if value is None:
        return []
    return as_list(value, path, f"{where}.{key}" if where else key)


def get_str(obj: Mapping[str, Any], key: str, path: str, where: str) -> str:
    """Return `obj[key]` as a stripped string, or "" when it is missing or null."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        field = f"{where}.{key}" if where else key
        raise ReportError(
            f"{describe(path, field)} is {_json_type(value)}, expected a string. "
            "Pass the scanner's unmodified JSON output"
        )
    return value.strip()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
