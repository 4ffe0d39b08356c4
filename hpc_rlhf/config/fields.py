"""Field metadata of the config schema: what a field declares about itself besides its type and default.

    total_steps: int = resume_safe(40)                              # may change when a run resumes
    logging: LoggingConfig = resume_safe(default_factory=LoggingConfig)   # a whole section may

`resume_safe` marks a key that may differ between a checkpoint's config and the config that resumes it
(on a section: every key of it). config/resume.py derives RESUME_SAFE_KEYS, the refusal's message and the
docs' list from these marks; nothing else lists them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

RESUME_SAFE = "resume_safe"  # the metadata key


def resume_safe(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field, with this default, that is safe to change on resume."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={RESUME_SAFE: True})


def is_resume_safe(f: dataclasses.Field) -> bool:
    """Whether the field was declared with `resume_safe`."""
    return bool(f.metadata.get(RESUME_SAFE, False))
