"""Typed SQLAlchemy 2 models and database session handling."""

from __future__ import annotations

from models.account import SCOPES, Account, ApiKey, Project
from models.attempt import EventAttempt
from models.base import Base
from models.customer import Customer, CustomerProject, Identity, TimelineEntry
from models.event import EVENT_STATUSES, Event
from models.imports import Import, ImportCheckpoint
from models.merges import CustomerMerge, IdentityTombstone
from models.replay import REPLAY_STATES, Replay
from models.session import Database
from models.source import Source

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
    "Identity",
    "IdentityTombstone",
    "Import",
    "ImportCheckpoint",
    "Project",
    "Replay",
    "Source",
    "TimelineEntry",
]
