"""Wait for asynchronous effects by polling with a deadline, never by fixed sleeps."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Return ``probe()``'s first truthy value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")
        time.sleep(interval)
        last = probe()
    return last


def throughout(probe: Callable[[], object], *, seconds: float, interval: float = 0.1,
               message: str = "condition") -> None:
    """Fail as soon as ``probe()`` is falsy during the next ``seconds`` (polled, not slept through)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not probe():
            raise AssertionError(f"{message} stopped holding")
        time.sleep(interval)
