"""The app harness of the connector test kit (app/testing.py): the embedded Tributary runs
without this suite's fixtures, and a third-party package runs the whole kit with the plugin alone."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.connectors.test_contract import AcmeCase, LaxConnector, example_connector_source
from tributary.app.testing import embedded_harness
from tributary.connectors.testkit import registered


def test_the_embedded_harness_runs_without_the_suite_fixtures(tmp_path: Path) -> None:
    with (
        registered(type("AcmeLocal", (LaxConnector,), {"name": "acme-local"})),
        embedded_harness(tmp_path) as harness,
    ):
        case = type("LocalCase", (AcmeCase,), {"connector": "acme-local"})()
        source_id = harness.create_source("acme-local", secrets=[case.secret])
        status, body = harness.post(source_id, case.delivery())
        assert (status, body) == (200, {"received": 1, "duplicates": 0})
        harness.drain()
        [event] = harness.events(source_id)
        assert (event.status, event.effects) == ("processed", 1)


@pytest.mark.slow
def test_a_third_party_package_runs_the_kit_with_the_plugin_alone(tmp_path: Path) -> None:
    """What a connector author outside this repository does: an app-local connector module named in
    TRIBUTARY_CONNECTOR_MODULES, `pytest_plugins = ["tributary.app.testing"]`, a case, the suite."""
    (tmp_path / "acme_local.py").write_text(
        example_connector_source() + "\nfrom tributary.connectors.registry import register_connector\n"
        "register_connector(AcmeConnector)\n"
    )
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tributary.app.testing"]\n')
    case_source = inspect.getsource(AcmeCase)
    (tmp_path / "test_acme.py").write_text(
        "import json\n"
        "from tributary.connectors.testkit import ConnectorContract, WebhookCase, stripe_signature\n\n\n"
        f"{case_source}\n\n"
        "class TestAcme(ConnectorContract):\n"
        "    case = AcmeCase()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["TRIBUTARY_CONNECTOR_MODULES"] = "acme_local"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_acme.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1[0-9] passed\b", result.stdout), result.stdout
