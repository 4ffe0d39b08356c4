"""An exact JSON form of plain nested data: what optimizer/scheduler state skeletons hold.

    text = dumps(skeleton)     # e.g. tensorfile.split_tensors(optimizer.state_dict())[0]
    loads(text) == skeleton    # and every type comes back: tuples, int keys, floats, None, bools

Plain JSON loses what such states hold: tuples (AdamW's betas) come back as lists, int dict keys (the
optimizer state of parameter i) as strings, and inf/nan are not JSON at all. Here:

    None, bool, int, str, finite float   themselves (floats as repr: the same float back)
    list                                 a JSON array
    dict of str keys (none starting "$") a JSON object, in insertion order
    any other dict                       {"$dict": [[key, value], ...]}, in insertion order
    tuple                                {"$tuple": [...]}
    inf, -inf, nan                       {"$float": "inf" | "-inf" | "nan"}

Any other type (a subclass included: numpy floats, OrderedDict) raises TypeError naming where it is,
rather than come back as something else. Reading builds nothing but these types, so a file from
elsewhere cannot run code; a malformed one raises ValueError.
"""

from __future__ import annotations

import json
import math
from typing import Any

_TAGS = ("$dict", "$tuple", "$float")
_NONFINITE = ("inf", "-inf", "nan")


def dumps(obj: Any) -> str:
    """The exact JSON text of `obj` (strict JSON: no NaN/Infinity literals)."""
    return json.dumps(_encode(obj, ""), allow_nan=False)


def loads(text: str) -> Any:
    """The object `dumps` was given. Raises ValueError on text that is not such a form."""
    return _decode(json.loads(text, parse_constant=_no_constant))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (non-finite floats are written as {{'$float': ...}})")


def _encode(x: Any, where: str) -> Any:
    t = type(x)
    if x is None or t in (bool, int, str):
        return x
    if t is float:
        return x if math.isfinite(x) else {"$float": repr(x)}
    if t is list:
        return [_encode(v, f"{where}/{i}") for i, v in enumerate(x)]
    if t is tuple:
        return {"$tuple": [_encode(v, f"{where}/{i}") for i, v in enumerate(x)]}
    if t is dict:
        if all(type(k) is str and not k.startswith("$") for k in x):
            return {k: _encode(v, f"{where}/{k}") for k, v in x.items()}
        return {"$dict": [[_encode(k, f"{where}/{k!r}"), _encode(v, f"{where}/{k}")] for k, v in x.items()]}
    raise TypeError(f"{where or '/'}: a {t.__module__}.{t.__qualname__} has no exact JSON form")


def _decode(x: Any) -> Any:
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    tagged = [k for k in x if k.startswith("$")]
    if not tagged:
        return {k: _decode(v) for k, v in x.items()}
    if len(x) != 1 or tagged[0] not in _TAGS:
        raise ValueError(f"unknown tagged object with keys {sorted(x)}; known tags: {', '.join(_TAGS)}")
    tag, body = tagged[0], x[tagged[0]]
    if tag == "$float":
        if body not in _NONFINITE:
            raise ValueError(f"$float {body!r} is not one of {', '.join(_NONFINITE)}")
        return float(body)
    if not isinstance(body, list):
        raise ValueError(f"{tag} holds a {type(body).__name__}, not a list")
    if tag == "$tuple":
        return tuple(_decode(v) for v in body)
    out = {}
    for pair in body:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValueError("$dict entries must be [key, value] pairs")
        key, value = _decode(pair[0]), _decode(pair[1])
        try:
            out[key] = value
        except TypeError:  # an unhashable key (a list)
            raise ValueError(f"$dict key {pair[0]!r} is not hashable") from None
    return out
