"""Typed SQLAlchemy 2 models and database session handling."""

from __future__ import annotations

from tributary.models.account import SCOPES, Account, ApiKey, Project
from tributary.models.attempt import EventAttempt
from tributary.models.base import Base
from tributary.models.customer import Customer, CustomerProject, Identity, TimelineEntry
from tributary.models.event import EVENT_STATUSES, Event
from tributary.models.event_tally import EventCount, EventLatency
from tributary.models.imports import Import, ImportCheckpoint
from tributary.models.merges import CustomerMerge, IdentityTombstone
from tributary.models.read_ahead import WriteGeneration
from tributary.models.replay import REPLAY_STATES, Replay
from tributary.models.session import Database
from tributary.models.source import Source

__all__ = [
    "EVENT_STATUSES",
    "REPLAY_STATES",
    "SCOPES",
    "Account",
    "ApiKey",
    "Base",
    "Customer",
    "CustomerMerge",
    "CustomerProject",
    "Database",
    "Event",
    "EventAttempt",
    "EventCount",
    "EventLatency",
    "Identity",
    "IdentityTombstone",
    "Import",
    "ImportCheckpoint",
    "Project",
    "Replay",
    "Source",
    "TimelineEntry",
    "WriteGeneration",
]
