"""A process-wide progress hook. Steps report (stage, partition, done, total); the CLI shows a bar,
Dagster steps log through their logger. Nothing happens when no hook is set."""

from __future__ import annotations

from typing import Callable

Hook = Callable[[str, str, int, int], None]
_hook: Hook | None = None


def set_hook(hook: Hook | None) -> None:
    global _hook
    _hook = hook


def report(stage: str, key: str, done: int, total: int) -> None:
    if _hook is not None:
        _hook(stage, key, done, total)
