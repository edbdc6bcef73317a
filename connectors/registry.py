"""Which connectors this process knows, and where each came from.

Three origins, loaded in this order:

1. **Built-ins**: `BUILTIN_CONNECTORS`, name -> "module:Class", shipped with Tributary.
2. **Third-party packages**: entry points in the group `tributary.connectors`; the entry-point
   name must be the connector's `name`, and the distribution and its version are recorded.
3. **App-local modules**: the modules named in `TRIBUTARY_CONNECTOR_MODULES` (comma-separated) are
   imported, and every class they define with `@register_connector` is registered.

Every registration is validated (pluggy's discipline): a `Connector` subclass, the three contract
methods implemented, a name matching `[a-z0-9_-]+`, no duplicate names. Names listed in
`TRIBUTARY_DISABLED_CONNECTORS` are blocked: never imported from an entry point, never registered.

The process registry (`registry()`) is built once from the environment, on first use, in the web
process and in workers alike. Tests build their own with `build_registry(...)` and install it with
`use_registry(...)`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from tributary.connectors.base import Connector

__all__ = [
    "BUILTIN_CONNECTORS",
    "DISABLED_ENV",
    "ENTRY_POINT_GROUP",
    "MODULES_ENV",
    "ConnectorRegistrationError",
    "ConnectorRegistry",
    "Registration",
    "UnknownConnector",
    "build_registry",
    "get_connector",
    "register_connector",
    "registry",
    "use_registry",
]

# Built-in connectors, one per line: name -> "module:Class" (imported when the registry is built).
BUILTIN_CONNECTORS: dict[str, str] = {
    "stripe": "tributary.connectors.stripe:StripeConnector",
    "clerk": "tributary.connectors.clerk:ClerkConnector",
    "supabase": "tributary.connectors.supabase:SupabaseConnector",
    "auth0": "tributary.connectors.auth0:Auth0Connector",
    "workos": "tributary.connectors.workos:WorkOSConnector",
    "okta": "tributary.connectors.okta:OktaConnector",
    "paddle": "tributary.connectors.paddle:PaddleConnector",
    "lemonsqueezy": "tributary.connectors.lemonsqueezy:LemonSqueezyConnector",
    "standard": "tributary.connectors.standard:StandardConnector",
    "mapping": "tributary.connectors.mapping:MappingConnector",
}

ENTRY_POINT_GROUP = "tributary.connectors"
MODULES_ENV = "TRIBUTARY_CONNECTOR_MODULES"
DISABLED_ENV = "TRIBUTARY_DISABLED_CONNECTORS"

# Stored in sources.connector, identities.source and events.channel (64 characters each).
NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
_CONTRACT_METHODS = ("verify", "envelopes", "normalize")

C = TypeVar("C", bound=type[Connector])


class ConnectorRegistrationError(Exception):
    """A connector that cannot be registered: wrong type, missing methods, bad or duplicate name."""


class UnknownConnector(LookupError):
    """No connector of that name is registered (never installed, or disabled)."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        known = sorted(known)
        hint = f"; installed: {', '.join(known)}" if known else ""
        super().__init__(f"no connector named {name!r} is installed{hint}")
        self.name = name


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered connector and its provenance."""

    name: str
    connector: Connector
    # "builtin", "entry_point", "local" (decorator + TRIBUTARY_CONNECTOR_MODULES) or "manual".
    origin: str
    module: str
    distribution: str | None = None
    version: str | None = None

    @property
    def title(self) -> str:
        return self.connector.title

    def to_json(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "title": self.title,
            "origin": self.origin,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
        }


def _validate(cls: object) -> type[Connector]:
    if not inspect.isclass(cls) or not issubclass(cls, Connector):
        raise ConnectorRegistrationError(f"{cls!r} is not a subclass of connectors.base.Connector")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConnectorRegistrationError(
            f"{cls.__module__}.{cls.__qualname__}.name must be 1-64 characters of [a-z0-9_-], got {name!r}"
        )
    missing = [m for m in _CONTRACT_METHODS if getattr(cls, m, None) is getattr(Connector, m)]
    if missing:
        raise ConnectorRegistrationError(f"connector {name!r} does not implement {', '.join(missing)}")
    headers = getattr(cls, "stored_headers", ())
    if not isinstance(headers, tuple) or not all(isinstance(h, str) for h in headers):
        raise ConnectorRegistrationError(
            f"connector {name!r}: stored_headers must be a tuple of header names"
        )
    return cls


class ConnectorRegistry:
    """Name -> registration. Thread-safe for registration; lookups read a plain dict."""

    def __init__(self, blocked: Iterable[str] = ()) -> None:
        self._registrations: dict[str, Registration] = {}
        self._blocked = {name.strip() for name in blocked if name.strip()}
        self._lock = threading.Lock()

    # -- registration ---------------------------------------------------------------------------

    def register(
        self,
        cls: type[Connector],
        *,
        origin: str = "manual",
        distribution: str | None = None,
        version: str | None = None,
    ) -> Registration | None:
        """Validate and register a connector class. Returns None when its name is blocked."""
        cls = _validate(cls)
        if cls.name in self._blocked:
            return None
        registration = Registration(
            name=cls.name,
            connector=cls(),
            origin=origin,
            module=cls.__module__,
            distribution=distribution,
            version=version,
        )
        with self._lock:
            existing = self._registrations.get(cls.name)
            if existing is not None:
                raise ConnectorRegistrationError(
                    f"two connectors are named {cls.name!r}: {existing.module} ({existing.origin}) "
                    f"and {cls.__module__} ({origin})"
                )
            self._registrations[cls.name] = registration
        return registration

    def unregister(self, name: str) -> Registration | None:
        with self._lock:
            return self._registrations.pop(name, None)

    def block(self, name: str) -> None:
        """Refuse `name` from now on, and drop it if it is registered."""
        with self._lock:
            self._blocked.add(name)
            self._registrations.pop(name, None)

    def is_blocked(self, name: str) -> bool:
        return name in self._blocked

    @property
    def blocked(self) -> frozenset[str]:
        return frozenset(self._blocked)

    # -- lookup ---------------------------------------------------------------------------------

    def get(self, name: str) -> Connector:
        registration = self._registrations.get(name)
        if registration is None:
            raise UnknownConnector(name, self._registrations)
        return registration.connector

    def registration(self, name: str) -> Registration:
        registration = self._registrations.get(name)
        if registration is None:
            raise UnknownConnector(name, self._registrations)
        return registration

    def names(self) -> list[str]:
        return sorted(self._registrations)

    def __contains__(self, name: object) -> bool:
        return name in self._registrations

    def __iter__(self) -> Iterator[Registration]:
        return iter(sorted(self._registrations.values(), key=lambda r: r.name))

    def __len__(self) -> int:
        return len(self._registrations)

    # -- loading --------------------------------------------------------------------------------

    def load_builtins(self, builtins: Mapping[str, str] | None = None) -> None:
        version = _tributary_version()
        for name, target in (BUILTIN_CONNECTORS if builtins is None else builtins).items():
            if name in self._blocked:
                continue
            cls = _import_target(target)
            if getattr(cls, "name", None) != name:
                raise ConnectorRegistrationError(
                    f"built-in {target} is registered as {name!r} but is named {cls.name!r}"
                )
            self.register(cls, origin="builtin", distribution="tributary", version=version)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for entry_point in sorted(importlib.metadata.entry_points(group=group), key=lambda ep: ep.name):
            if entry_point.name in self._blocked:
                continue  # blocked before import: a broken plugin can be switched off by name
            dist = entry_point.dist
            origin = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
            try:
                cls = entry_point.load()
            except Exception as exc:
                raise ConnectorRegistrationError(
                    f"the {group} entry point {entry_point.name!r} ({origin}) failed to load: {exc}"
                ) from exc
            if getattr(cls, "name", None) != entry_point.name:
                raise ConnectorRegistrationError(
                    f"the {group} entry point {entry_point.name!r} ({origin}) points to a connector named "
                    f"{getattr(cls, 'name', None)!r}; the two names must match"
                )
            self.register(
                cls,
                origin="entry_point",
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
            )

    def load_modules(self, modules: Iterable[str]) -> None:
        for module_name in modules:
            try:
                importlib.import_module(module_name)
            except ImportError as exc:
                raise ConnectorRegistrationError(
                    f"{MODULES_ENV} names {module_name!r}, which cannot be imported: {exc}"
                ) from exc
            found = _decorated_in(module_name)
            if not found:
                raise ConnectorRegistrationError(
                    f"{MODULES_ENV} names {module_name!r}, which defines no @register_connector class"
                )
            for cls in found:
                self.register(cls, origin="local")


def _tributary_version() -> str | None:
    try:
        return importlib.metadata.version("tributary")
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_target(target: str) -> type[Connector]:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attribute, None)
    if cls is None:
        raise ConnectorRegistrationError(f"{module_name} has no attribute {attribute!r}")
    return _validate(cls)


# -- the decorator for app-local connectors ------------------------------------------------------

# Module name -> classes decorated there, in definition order. Registration happens only when a
# registry loads that module (or a package containing it), so importing a module has no global effect.
_decorated: dict[str, list[type[Connector]]] = {}


def register_connector(cls: C) -> C:
    """Mark a connector class for registration when its module is listed in
    `TRIBUTARY_CONNECTOR_MODULES`. Validates immediately, so mistakes surface at import."""
    _validate(cls)
    classes = _decorated.setdefault(cls.__module__, [])
    if cls not in classes:
        classes.append(cls)
    return cls


def _decorated_in(module_name: str) -> list[type[Connector]]:
    prefix = module_name + "."
    return [
        cls
        for name, classes in sorted(_decorated.items())
        if name == module_name or name.startswith(prefix)
        for cls in classes
    ]


# -- the process registry ------------------------------------------------------------------------


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def build_registry(
    *,
    modules: Sequence[str] | None = None,
    disabled: Iterable[str] | None = None,
    builtins: Mapping[str, str] | None = None,
    entry_points: bool = True,
) -> ConnectorRegistry:
    """A registry loaded from the three origins. `modules` and `disabled` default to the
    environment (`TRIBUTARY_CONNECTOR_MODULES`, `TRIBUTARY_DISABLED_CONNECTORS`)."""
    if disabled is None:
        disabled = _split(os.environ.get(DISABLED_ENV))
    if modules is None:
        modules = _split(os.environ.get(MODULES_ENV))
    built = ConnectorRegistry(blocked=disabled)
    built.load_builtins(builtins)
    if entry_points:
        built.load_entry_points()
    built.load_modules(modules)
    return built


_process_registry: ConnectorRegistry | None = None
_process_lock = threading.Lock()


def registry() -> ConnectorRegistry:
    """The process registry, built from the environment on first use."""
    global _process_registry  # noqa: PLW0603 - one registry per process is the design
    if _process_registry is None:
        with _process_lock:
            if _process_registry is None:
                _process_registry = build_registry()
    return _process_registry


def get_connector(name: str) -> Connector:
    return registry().get(name)


@contextmanager
def use_registry(replacement: ConnectorRegistry) -> Iterator[ConnectorRegistry]:
    """Install another process registry for the duration of a block (tests)."""
    global _process_registry  # noqa: PLW0603
    with _process_lock:
        previous, _process_registry = _process_registry, replacement
    try:
        yield replacement
    finally:
        with _process_lock:
            _process_registry = previous
