"""Functions named in the config as `package.module:function` strings, imported when first needed.

    fn = load_callable("hpc_rlhf.demo.task:gold_reward_metric", "logging.step_metrics")

A spec whose module cannot be found, or whose module has no such callable, is a ConfigError of one
line naming the config key and the spec. An error raised while the module itself is imported (a
bug in it) propagates with its traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hpc_rlhf.errors import ConfigError


def load_callable(spec: str, key: str) -> Callable[..., Any]:
    """The callable named by `spec` ('package.module:name', name may be dotted: 'module:Class.method')."""
    module, sep, name = spec.partition(":")
    if not (sep and module and name):
        raise ConfigError(f"config key '{key}': '{spec}' is not of the form 'package.module:function'")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise  # a module the named one imports is missing: its own error says which
        raise ConfigError(f"config key '{key}': '{spec}': no module named '{e.name}'") from None
    obj: Any = mod
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"config key '{key}': '{spec}': module '{module}' has no '{name}'")
    if not callable(obj):
        raise ConfigError(f"config key '{key}': '{spec}' names a {type(obj).__name__}, not a function")
    return obj
