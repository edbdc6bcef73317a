"""Tributary's Python client: `identify`/`ping` from your app, and the read API.

from tributary_sdk import Tributary
client = Tributary("trb_…", base_url="https://crm.example.com")
client.identify("ada@example.com", status="trial", params={"plan": "pro"})
"""

from __future__ import annotations

__version__ = "0.1.0"

from tributary_sdk.aio import AsyncCustomers, AsyncTributary
from tributary_sdk.client import Customers, Tributary
from tributary_sdk.errors import (
    AuthenticationError,
    NetworkError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    TributaryError,
    ValidationError,
)
from tributary_sdk.models import Customer, EventAccepted, Identity, ProjectState, TimelineEntry
from tributary_sdk.sender import QueueFull, ShutDown

__all__ = [
    "AsyncCustomers",
    "AsyncTributary",
    "AuthenticationError",
    "Customer",
    "Customers",
    "EventAccepted",
    "Identity",
    "NetworkError",
    "NotFound",
    "PermissionDenied",
    "ProjectState",
    "QueueFull",
    "RateLimited",
    "ServerError",
    "ShutDown",
    "TimelineEntry",
    "Tributary",
    "TributaryError",
    "ValidationError",
    "__version__",
]
