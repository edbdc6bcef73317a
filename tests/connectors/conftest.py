"""Connector tests run the public test kit against this suite's database and Redis."""

from __future__ import annotations

import pytest
from flask import Flask

from connectors.testing import AppHarness
from workers.runtime import Runtime


@pytest.fixture
def tributary_harness(app: Flask, runtime: Runtime) -> AppHarness:
    return AppHarness(app, runtime)
