"""Parameter mappings (YAML files, notebook parameters) to pydantic models, strictly.

Why: a misspelt parameter must stop a run with a "did you mean", not be ignored. Research jobs
and trading runs both nest sections (``strategy:``, ``execution:``, ``risk:``) under a top
level, and check every level the same way here.
"""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ParameterError

__all__ = ["model_from_mapping"]

M = TypeVar("M", bound=BaseModel)


def model_from_mapping(model: type[M], data: dict[str, Any], sections: dict[str, type[BaseModel]], *,
                       source: str = "parameters") -> M:
    """``model(**data)`` after checking the names of the top level and of each ``sections`` block.

    Raises ``ParameterError`` naming the unknown key (with a close match) or the invalid value.
    """
    if not isinstance(data, dict):
        raise ParameterError(f"{source}: expected a mapping of parameter names to values")
    for section, sub in ((None, model), *sections.items()):
        block = data if section is None else (data.get(section) or {})
        if not isinstance(block, dict):
            raise ParameterError(f"{source}: `{section}` must be a mapping")
        for key in block:
            if key not in sub.model_fields:
                close = difflib.get_close_matches(str(key), list(sub.model_fields), n=1)
                prefix = f"{section}." if section else ""
                raise ParameterError(
                    f"{source}: unknown parameter {prefix}{key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                )
    try:
        return model(**data)
    except ValidationError as exc:
        raise ParameterError(f"{source}: {exc}") from exc
