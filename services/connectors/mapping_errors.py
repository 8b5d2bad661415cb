"""The one error both field mappings raise, and the decorator that turns stray value errors
inside a mapping into it (so a service dead-letters one item instead of crashing)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast


class MappingError(ValueError):
    """An item, record or payload that cannot be mapped (unknown entity, unreadable value)."""


F = TypeVar("F", bound=Callable[..., Any])


def mapping_errors(fn: F) -> F:
    """Bad values inside an item (an unparsable date, a non-numeric duration) surface as
    MappingError naming the function."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MappingError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise MappingError(f"{fn.__name__}({args[0] if args else ''}): {e}") from e

    return cast(F, wrapper)
