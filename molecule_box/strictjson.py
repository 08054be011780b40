"""Strict JSON in, so only strict JSON goes out.

Python's ``json`` reads ``NaN``, ``Infinity`` and numbers that overflow a float (``1e309`` becomes ``inf``), and
writes them back as ``NaN``/``Infinity``, which strict JSON clients cannot parse; and it raises RecursionError
(not ValueError) on deep nesting. Free-form JSON the box stores and re-emits (A2A bodies, agent cards, activity
bodies, agents' replies) is therefore read here: pydantic-core's parser refuses those tokens and nesting deeper
than its limit (about 200 levels) with a ValueError, and :func:`finite` catches the overflowed numbers.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pydantic_core

#: A number literal that may overflow a float: a three-digit exponent or 300 digits in a row. Only a text that
#: holds one is walked for infinities, so a common body costs one scan of its bytes.
_MAYBE_OVERFLOW = re.compile(rb"[eE]\+?\d{3}|\d{300}")


def finite(value: Any) -> bool:
    """Whether every float in a parsed JSON value is finite (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def loads(raw: bytes) -> Any:
    """Parse ``raw`` as strict JSON; ValueError (with the parser's reason) for anything else."""
    value = pydantic_core.from_json(raw, allow_inf_nan=False)
    if _MAYBE_OVERFLOW.search(raw) and not finite(value):
        raise ValueError("a number is out of range (it overflows a 64-bit float)")
    return value
