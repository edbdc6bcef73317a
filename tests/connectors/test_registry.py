"""The connector registry: validation at registration, the three origins, blocking by name."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.connectors.fake_dist import fake_distribution
from tributary.connectors.base import Connector, Envelope, InboundRequest, NormalizeContext, SourceConfig
from tributary.connectors.changes import CustomerChange
from tributary.connectors.registry import (
    BUILTIN_CONNECTORS,
    ConnectorRegistrationError,
    ConnectorRegistry,
    UnknownConnector,
    build_registry,
    register_connector,
    registry,
)


class Valid(Connector):
    name = "valid"
    title = "A valid connector"

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        return None

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        return []

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        return []


def _named(name: Any) -> type[Connector]:
    return type("Named", (Valid,), {"name": name})


def test_register_records_origin_and_instance() -> None:
    reg = ConnectorRegistry()
    registration = reg.register(Valid, origin="manual")
    assert registration is not None
    assert reg.get("valid") is registration.connector and isinstance(registration.connector, Valid)
    assert "valid" in reg and reg.names() == ["valid"] and len(reg) == 1
    assert registration.to_json() == {
        "name": "valid",
        "title": "A valid connector",
        "origin": "manual",
        "module": __name__,
        "distribution": None,
        "version": None,
    }


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        (object, "not a subclass"),
        (Valid(), "not a subclass"),
        (_named("Upper"), "must be 1-64 characters"),
        (_named("has space"), "must be 1-64 characters"),
        (_named(""), "must be 1-64 characters"),
        (_named("x" * 65), "must be 1-64 characters"),
        (_named(None), "must be 1-64 characters"),
        (
            type("NoNormalize", (Connector,), {"name": "partial", "verify": Valid.verify}),
            "envelopes, normalize",
        ),
        (type("BadHeaders", (Valid,), {"name": "bad-headers", "stored_headers": "content-type"}), "tuple"),
    ],
)
def test_register_rejects_invalid_connectors(candidate: Any, message: str) -> None:
    with pytest.raises(ConnectorRegistrationError, match=message):
        ConnectorRegistry().register(candidate)


def test_duplicate_names_raise_and_keep_the_first() -> None:
    reg = ConnectorRegistry()
    reg.register(Valid)
    with pytest.raises(ConnectorRegistrationError, match="two connectors are named 'valid'"):
        reg.register(_named("valid"))
    assert type(reg.get("valid")) is Valid


def test_blocked_names_are_refused_and_block_drops_a_registration() -> None:
    reg = ConnectorRegistry(blocked=["valid"])
    assert reg.register(Valid) is None
    assert "valid" not in reg and reg.is_blocked("valid")
    other = _named("other")
    reg.register(other)
    reg.block("other")
    assert "other" not in reg and reg.blocked == {"valid", "other"}
    with pytest.raises(UnknownConnector, match="no connector named 'other' is installed"):
        reg.get("other")


def test_unknown_connector_lists_what_is_installed() -> None:
    reg = ConnectorRegistry()
    reg.register(Valid)
    with pytest.raises(UnknownConnector, match="installed: valid"):
        reg.registration("nope")


def test_builtins_are_importable_and_named_as_listed() -> None:
    reg = build_registry(modules=[], disabled=[], entry_points=False)
    assert reg.names() == sorted(BUILTIN_CONNECTORS)
    for registration in reg:
        assert registration.origin == "builtin" and registration.distribution == "tributary"
    with pytest.raises(ConnectorRegistrationError, match="is registered as 'misnamed'"):
        build_registry(
            modules=[], disabled=[], builtins={"misnamed": f"{__name__}:Valid"}, entry_points=False
        )


def test_builtins_can_be_disabled_without_importing_them() -> None:
    reg = build_registry(
        modules=[], disabled=["ghost"], builtins={"ghost": "no_such_module:Nope"}, entry_points=False
    )
    assert "ghost" not in reg


def _write_module(root: Path, name: str, source: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(source))


LOCAL_MODULE = """
    from tributary.connectors.base import Connector
    from tributary.connectors.registry import register_connector


    @register_connector
    class Local(Connector):
        name = "{name}"

        def verify(self, request, source):
            return None

        def envelopes(self, request, source):
            return []

        def normalize(self, envelope, context):
            return []


    class NotDecorated(Local):
        name = "not-decorated"
"""


@pytest.fixture
def module_dir(tmp_path: Path) -> Any:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("trb_local")]:
        del sys.modules[name]


def test_local_modules_from_the_environment_register_decorated_classes(
    module_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(module_dir, "trb_local_one", LOCAL_MODULE.format(name="local-one"))
    package = module_dir / "trb_local_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from trb_local_pkg import hooks  # noqa\n")
    (package / "hooks.py").write_text(textwrap.dedent(LOCAL_MODULE.format(name="local-two")))
    monkeypatch.setenv("TRIBUTARY_CONNECTOR_MODULES", " trb_local_one, trb_local_pkg ")
    reg = build_registry(entry_points=False)
    assert {"local-one", "local-two"} <= set(reg.names())
    assert "not-decorated" not in reg
    assert reg.registration("local-one").origin == "local"
    assert reg.registration("local-two").module == "trb_local_pkg.hooks"


def test_local_modules_fail_loudly(module_dir: Path) -> None:
    with pytest.raises(ConnectorRegistrationError, match="cannot be imported"):
        build_registry(modules=["trb_local_missing"], entry_points=False)
    _write_module(module_dir, "trb_local_empty", "X = 1\n")
    with pytest.raises(ConnectorRegistrationError, match="defines no @register_connector class"):
        build_registry(modules=["trb_local_empty"], entry_points=False)


def test_decorator_validates_at_import() -> None:
    with pytest.raises(ConnectorRegistrationError, match="must be 1-64 characters"):
        register_connector(_named("Bad Name"))


def test_disabled_environment_blocks_local_connectors(
    module_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(module_dir, "trb_local_three", LOCAL_MODULE.format(name="local-three"))
    monkeypatch.setenv("TRIBUTARY_DISABLED_CONNECTORS", "local-three")
    reg = build_registry(modules=["trb_local_three"], entry_points=False)
    assert "local-three" not in reg


PLUGIN = """
    from tributary.connectors.base import Connector


    class Plugin(Connector):
        name = "acme"
        title = "Acme webhooks"

        def verify(self, request, source):
            return None

        def envelopes(self, request, source):
            return []

        def normalize(self, envelope, context):
            return []
"""


def test_entry_points_record_their_distribution(tmp_path: Path) -> None:
    with fake_distribution(
        tmp_path / "site",
        "tributary-acme",
        "1.2.3",
        entry_points={"acme": "trb_acme_plugin:Plugin"},
        modules={"trb_acme_plugin": PLUGIN},
    ):
        reg = build_registry(modules=[], disabled=[])
    registration = reg.registration("acme")
    assert (registration.origin, registration.distribution, registration.version) == (
        "entry_point",
        "tributary-acme",
        "1.2.3",
    )
    assert registration.title == "Acme webhooks"


def test_a_broken_entry_point_fails_loudly_unless_disabled(tmp_path: Path) -> None:
    broken = {"trb_broken_plugin": "raise RuntimeError('boom at import')\n"}
    with fake_distribution(
        tmp_path / "site",
        "tributary-broken",
        "0.1",
        entry_points={"broken": "trb_broken_plugin:X"},
        modules=broken,
    ):
        with pytest.raises(ConnectorRegistrationError, match=r"'broken' .*failed to load: boom at import"):
            build_registry(modules=[], disabled=[])
        assert "broken" not in build_registry(modules=[], disabled=["broken"])


def test_entry_point_name_must_match_the_connector_name(tmp_path: Path) -> None:
    with (
        fake_distribution(
            tmp_path / "site",
            "tributary-alias",
            "0.1",
            entry_points={"alias": "trb_alias_plugin:Plugin"},
            modules={"trb_alias_plugin": PLUGIN},
        ),
        pytest.raises(ConnectorRegistrationError, match="the two names must match"),
    ):
        build_registry(modules=[], disabled=[])


def test_process_registry_is_built_once() -> None:
    assert registry() is registry()
