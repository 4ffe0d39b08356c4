"""User-facing errors: one line, naming the thing and the fix, printed without a traceback."""


class UserError(Exception):
    """An error caused by input (config, data, paths): the CLI prints `error: <msg>` and exits 2."""


class ConfigError(UserError):
    """A bad config key or value."""


def check_key(cond: bool, key: str, msg: str) -> None:
    """A config check: ConfigError "config key 'KEY': MSG" unless `cond`."""
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


class ShardError(UserError):
    """A rollout shard is missing, partial or damaged. `status`: 'damaged' (unreadable, a checksum
    failed), 'partial' (fields missing or inconsistent) or 'foreign' (not a shard this reader knows);
    `reason`: the finding alone, without the path (what `archive verify` lists)."""

    def __init__(self, msg: str, status: str = "damaged", reason: str = ""):
        super().__init__(msg)
        self.status, self.reason = status, reason or msg


class CheckpointError(UserError):
    """A checkpoint is missing, uncommitted or damaged."""


class RankTimeout(RuntimeError):
    """A blocking wait between ranks ran past its timeout."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
