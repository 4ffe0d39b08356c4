"""Functions named in the config as `package.module:function` strings, imported when first needed.

    fn = load_callable("hpc_rlhf.demo.task:gold_reward_metric", "logging.step_metrics")

A spec whose module cannot be found, or whose module has no such callable, is a ConfigError of one
line naming the config key and the spec. An error raised while the module itself is imported (a
bug in it) propagates with its traceback from `load_callable`; `load_function` (the reward functions,
checked when the config loads) turns it into a ConfigError too, and checks the signature:

    fn = load_function("hpc_rlhf.rewards.builtin:exact_match", "reward.sources[1].function", ARGS)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc_rlhf.algo import AdvantageEstimator

from hpc_rlhf.errors import ConfigError, first_line


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


def load_function(spec: str, key: str, args: tuple[str, ...], keywords: tuple[str, ...] = ()) -> Callable[..., Any]:
    """`load_callable`, and the callable must take len(`args`) positional arguments (named `args` in the
    message) plus those of the optional `keywords` it declares. Any error raised while importing its
    module is a one-line ConfigError naming the key and the spec too."""
    try:
        fn = load_callable(spec, key)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken module: name it, at config load
        raise ConfigError(
            f"config key '{key}': importing '{spec}' failed: {type(e).__name__}: {first_line(e)}"
        ) from None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: its first call will tell
        return fn
    try:
        sig.bind(*args, **{k: k for k in keywords if takes_keyword(fn, k)})
    except TypeError as e:
        raise ConfigError(
            f"config key '{key}': '{spec}' has the signature {sig} but is called as ({', '.join(args)}): {e}"
        ) from None
    return fn


def takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """True when `fn` accepts the keyword argument `name` (by name or through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator `algo.name` names: a registered name, or a registered `package.module:function`
    (importing its module registers it). `.critic`: whether the run has a value model."""
    from hpc_rlhf.algo import ADVANTAGE_ESTIMATORS, UnknownName

    if ":" in name:
        fn = load_callable(name, "algo.name")  # importing its module registers it
        entry = ADVANTAGE_ESTIMATORS.find(fn)
        if entry is None:
            raise ConfigError(
                f"config key 'algo.name': '{name}' is not a registered advantage estimator; "
                "decorate it with @hpc_rlhf.algo.register_advantage(NAME) (docs/algorithms.md)"
            )
        return entry
    try:
        return ADVANTAGE_ESTIMATORS.get(name)
    except UnknownName as e:
        raise ConfigError(f"config key 'algo.name': {e}") from None
