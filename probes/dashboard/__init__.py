"""The live dashboard: chat with a model beside what it infers about you, and steer it."""

from __future__ import annotations

from probes.dashboard.engine import Branch, ChatEngine, Pin, Reading, Reply
from probes.dashboard.session import BusyError, Session, SteerSettings

__all__ = [
    "Branch",
    "BusyError",
    "ChatEngine",
    "Pin",
    "Reading",
    "Reply",
    "Session",
    "SteerSettings",
]
