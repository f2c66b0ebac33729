"""The JSON-schema check of a study config (config/schema/config.schema.yaml), in one line.

jsonschema reports a violation as a nested error object; `validate_schema` keeps the most
relevant one and says it the way every config error is said: the field, what is wrong, what
is allowed. Semantic checks (files, combinations, memory) follow in `config.check_semantics`.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .errors import ConfigError
from .paths import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "config" / "schema" / "config.schema.yaml"


def _field_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "<top level>"


def _schema_error_message(error: Any) -> str:
    """Turn a jsonschema error into one line: field, problem, what is allowed."""
    field = _field_path(error.absolute_path)
    validator = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        allowed = ", ".join(sorted(schema.get("properties", {}))) or "none"
        return f"{field}: unknown key(s) {', '.join(map(repr, extra))}; allowed keys: {allowed}"
    if validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"{field}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if validator == "type":
        return f"{field}: expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if validator in ("minimum", "exclusiveMinimum"):
        bound = "at least" if validator == "minimum" else "greater than"
        return f"{field}: {error.instance!r} is too small; must be {bound} {error.validator_value}"
    if validator == "required":
        return f"{field}: {error.message}"
    if "propertyNames" in error.schema_path or validator == "propertyNames":
        return (
            f"{field}: name {error.instance!r} is not allowed; names use lowercase letters, digits, "
            "'.', '_' and '-' and start with a letter or digit (no paths)"
        )
    if validator == "pattern" and list(error.absolute_path)[-1:] == ["revision"]:
        return f"{field}: {error.instance!r} is not a commit; use the full 40-hex commit id (branches and tags move)"
    if validator == "pattern":
        return f"{field}: {error.instance!r} does not match the allowed pattern {error.validator_value}"
    if validator in ("minItems", "minProperties"):
        return f"{field}: must not be empty"
    if validator == "uniqueItems":
        return f"{field}: contains duplicates {error.instance!r}"
    return f"{field}: {error.message}"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _defaults_of(node: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, child in (node.get("properties") or {}).items():
        if "default" in child:
            found[key] = copy.deepcopy(child["default"])
        elif child.get("properties"):
            nested = _defaults_of(child)
            if nested:
                found[key] = nested
    return found


def schema_defaults() -> dict[str, Any]:
    """The config's defaults, as the schema states them (the one place they live): every
    property's `default`, nested as the sections are. A config is merged onto these after
    validation, so a study only says what differs."""
    return _defaults_of(load_schema())


def validate_schema(config: dict[str, Any]) -> None:
    """Raise ConfigError on the first (most relevant) schema violation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = list(validator.iter_errors(config))
    if errors:
        # propertyNames errors are reported on the parent; prefer the most specific error
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_schema_error_message(best))
