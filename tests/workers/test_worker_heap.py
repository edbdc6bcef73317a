"""The worker process tunes its garbage collector once started (workers/worker.py `prepare_heap`):
checked in a child process, since freezing would keep the test process's objects for good."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from typing import Any

import pytest
from flask import Flask

from tributary.app.cli import cli
from tributary.workers.worker import GC_YOUNG_THRESHOLD, TributaryWorker

PROBE = """
import gc, json
from tributary.workers.worker import prepare_heap
before = gc.get_threshold()
prepare_heap()
cycle = []
cycle.append(cycle)
del cycle
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "collected": gc.collect()}))
"""


def test_prepare_heap_freezes_what_is_loaded_and_spaces_young_collections() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["frozen"] > 10_000  # the modules, classes and mappers loaded at start
    assert found["after"] == [GC_YOUNG_THRESHOLD, *found["before"][1:]]
    # Cyclic garbage made afterwards is still collected.
    assert found["collected"] >= 1


def test_the_worker_command_prepares_its_heap_before_it_works(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `tributary worker` is the long-running process the tuning is for; it must run before the
    # first job, not after the worker returns.
    calls: list[str] = []

    class Started:
        def work(self, **_kwargs: Any) -> bool:
            calls.append("work")
            return True

    importlib.import_module("app.cli.run")  # registers the command, as main() does
    command = cli.commands["worker"]
    assert command.callback is not None
    # Patched where the registered command looks it up (its module may be imported twice; Flask
    # wraps the callback in an app context).
    found = inspect.unwrap(command.callback).__globals__
    monkeypatch.setitem(found, "prepare_heap", lambda: calls.append("prepare_heap"))
    monkeypatch.setattr(TributaryWorker, "started", classmethod(lambda cls, rt: Started()))
    result = app.test_cli_runner().invoke(cli, ["worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert calls == ["prepare_heap", "work"]
