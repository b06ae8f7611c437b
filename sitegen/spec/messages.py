"""pydantic validation errors as ``file:line: dotted.key: message`` lines, one per problem."""

from __future__ import annotations

import difflib
import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from sitegen.spec.root import Spec
from sitegen.spec.source import SpecSource, _dotted


def _clean_loc(loc: tuple, data: Any, missing: bool) -> tuple:
    """Keep the parts of a pydantic error location that are keys of the data (drop union tags)."""
    out: list = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        elif last and missing:
            out.append(part)
        # else: a union branch tag such as "literal['all']" or "TopClasses": skip it
    return tuple(out)


def _message(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if (
        err["type"] in ("literal_error", "enum")
        or "pattern" in err["type"]
        or err["type"].startswith(("greater_than", "less_than", "too_short", "too_long"))
    ):
        msg = f"{msg}, got {err.get('input')!r}"
    return msg


def _suggest_key(loc: tuple, model: type[BaseModel]) -> str:
    """'did you mean' for an unknown key, using the field names of the model at that place."""
    fields = _fields_at(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(fields)})" if fields else ""


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """Field names of the nested model reached by ``loc``, walking dict/list/union annotations."""
    tp: Any = model
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    found = _model_in(tp)
    return list(found.model_fields) if found else []


def _step(tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return field.annotation if field else None
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict:
        return args[1]
    if origin is list:
        return args[0]
    for arg in args:  # unions, Annotated
        nxt = _step(arg, part)
        if nxt is not None:
            return nxt
    return None


def _model_in(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _model_in(arg)
        if found:
            return found
    return None


def format_validation_errors(exc: ValidationError, data: Any, source: SpecSource) -> list[str]:
    """One ``file:line: key: message`` line per problem, union branches collapsed."""
    rows: list[tuple[tuple, str]] = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]), data, err["type"] == "missing")
        msg = _message(dict(err))
        if err["type"] == "extra_forbidden":
            msg += _suggest_key(loc, Spec)
        rows.append((loc, msg))
    # a union reports one error per branch: keep the deepest locations, one message per location
    deepest = [r for r in rows if not any(o[0][: len(r[0])] == r[0] and len(o[0]) > len(r[0]) for o in rows)]
    seen: set[tuple] = set()
    out = []
    for loc, msg in deepest:
        if loc in seen:
            continue
        seen.add(loc)
        out.append(f"{source.where(loc)}: {_dotted(loc)}: {msg}")
    return out


def problems_by_line(problems: list[str]) -> list[str]:
    """``file:line: ...`` problems in file order (stable), duplicates dropped: one line per problem."""

    def line(p: str) -> int:
        m = re.match(r"^[^:]*:(\d+)", p)
        return int(m.group(1)) if m else 0

    return sorted(dict.fromkeys(problems), key=line)
