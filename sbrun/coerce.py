"""Plain data onto the schema dataclasses: OmegaConf merges do the type coercion, and a type or
structure error becomes one ConfigError line naming the key, its value and what is allowed."""
from __future__ import annotations

import re
from typing import Any, Dict

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import ConfigError

UNKNOWN_KEY_HINT = "allowed: the keys listed in docs/configuration.md or shown by `sbrun --cfg job`"
_ALLOWED_BY_TYPE = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
                    "String": "a string", "ListConfig": "a list like [1,2]"}


def type_error_message(err: OmegaConfBaseException, prefix: str = "") -> str:
    """One line for an OmegaConf type/structure error: the key, its value and what is allowed.
    OmegaConf (pinned below 2.4) names the expected type only in its message text."""
    key = prefix + (getattr(err, "full_key", None) or "config")
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    m = re.search(r"Value '(.*?)' (?:of type '\w+' )?could not be converted to (\w+)", text)
    if m:
        return f"{key}={m.group(1)} is invalid; allowed: {_ALLOWED_BY_TYPE.get(m.group(2), m.group(2))}"
    m = re.search(r"Key '([^']+)' not in '\w+'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if m:
        parent = key.rsplit(".", 1)[0] + "." if "." in key else prefix
        return f"{parent}{m.group(1)} is not a config key; {UNKNOWN_KEY_HINT}"
    m = re.search(r"Invalid type assigned: (\w+) is not a subclass of (\w+)", text) \
        or re.search(r"(\w+) is not a (\w+)", text)
    if m:
        value = getattr(err, "value", None)
        shown = f"={value}" if value is not None else ""
        return f"{key}{shown} is invalid; allowed: {_ALLOWED_BY_TYPE.get(m.group(2), m.group(2))}"
    return f"{key}: {text}"


def merge_into(schema, data: Dict[str, Any], prefix: str = ""):
    """`data` merged onto a dataclass schema and built (running its __post_init__), or ConfigError."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(type_error_message(err, prefix)) from None
