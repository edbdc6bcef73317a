"""The operator's settings are read from the environment with documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tributary.runtime.config import Settings


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.load({"TRIBUTARY_HOME": str(tmp_path), "TRIBUTARY_SECRET_KEY": "x"})
    assert settings.retry_intervals == (10, 60, 300, 1800)
    assert settings.event_retention_days == 30
    assert settings.replay_queue_name == "tributary-replay"
    assert settings.metrics_token is None


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIBUTARY_RETRY_INTERVALS", "5, 30,120")
    monkeypatch.setenv("TRIBUTARY_EVENT_RETENTION_DAYS", "7")
    monkeypatch.setenv("TRIBUTARY_METRICS_TOKEN", "tok")
    settings = Settings.load({"TRIBUTARY_HOME": str(tmp_path), "TRIBUTARY_SECRET_KEY": "x"})
    assert settings.retry_intervals == (5, 30, 120)
    assert settings.event_retention_days == 7 and settings.metrics_token == "tok"
    monkeypatch.setenv("TRIBUTARY_RETRY_INTERVALS", "")
    assert Settings.load({"TRIBUTARY_HOME": str(tmp_path), "TRIBUTARY_SECRET_KEY": "x"}).retry_intervals == ()
    monkeypatch.setenv("TRIBUTARY_RETRY_INTERVALS", "10,-1")
    with pytest.raises(ValueError, match="TRIBUTARY_RETRY_INTERVALS"):
        Settings.load({"TRIBUTARY_HOME": str(tmp_path), "TRIBUTARY_SECRET_KEY": "x"})


def test_drain_gather_is_given_in_milliseconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"TRIBUTARY_HOME": str(tmp_path), "TRIBUTARY_SECRET_KEY": "x"}
    assert Settings.load(base).drain_gather_seconds == 0.02
    monkeypatch.setenv("TRIBUTARY_DRAIN_GATHER_MS", "50")
    assert Settings.load(base).drain_gather_seconds == 0.05
    monkeypatch.setenv("TRIBUTARY_DRAIN_GATHER_MS", "0")
    assert Settings.load(base).drain_gather_seconds == 0
    for wrong in ("-5", "nan", "inf", "soon"):
        monkeypatch.setenv("TRIBUTARY_DRAIN_GATHER_MS", wrong)
        with pytest.raises(ValueError, match="TRIBUTARY_DRAIN_GATHER_MS"):
            Settings.load(base)
