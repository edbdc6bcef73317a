"""The access log (`app/access_log.py`): line for line gunicorn's own, whatever the format names,
and gunicorn's own path wherever a logging configuration may read the record's atoms."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config

from tributary.app import gunicorn_conf
from tributary.app.access_log import _ATOMS, AccessLogger

DEFAULT = Config().access_log_format
EVERY_LETTER = " ".join(f"%({key})s" for key in _ATOMS)
BRACED = (
    '"%({x-request-id}i)s" %({X-Trace}I)s %({content-type}o)s %({remote_port}e)s %({wsgi.url_scheme}e)s '
    "%({absent}i)s %({absent}o)s %({absent}e)s %({malformed})s %%(h)s %(h)s"
)
# A key gunicorn does not know: gunicorn's own path writes it as "-".
UNKNOWN = DEFAULT + " %(unknown)s"


@pytest.fixture(autouse=True)
def same_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both loggers read the same time, so two lines made a second apart still compare."""
    monkeypatch.setattr(glogging.Logger, "now", lambda _self: "[04/Dec/2026:12:00:00 +0000]")
    yield
    # Both loggers write through the process's one "gunicorn.access" logger: leave it clean.
    for handler in list(logging.getLogger("gunicorn.access").handlers):
        logging.getLogger("gunicorn.access").removeHandler(handler)
        handler.close()


def _request(quote: str = "") -> tuple[Any, Any, dict[str, Any], timedelta]:
    resp = SimpleNamespace(
        status="202 ACCEPTED",
        sent=57,
        headers=[("Content-Type", "application/json"), ("X-Request-Id", "out"), ("Content-Type", "last")],
    )
    req = SimpleNamespace(
        headers=[
            ("HOST", "example.com"),
            ("X-REQUEST-ID", f"id-{quote}1"),
            ("X-TRACE", "first"),
            ("X-TRACE", "second"),  # a repeated header: gunicorn keeps the last
            ("USER-AGENT", f"agent {quote}quoted{quote}"),
        ]
    )
    user = base64.b64encode(b"ops:secret").decode()
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"/webhooks/src_1?a={quote}b",
        "PATH_INFO": "/webhooks/src_1",
        "QUERY_STRING": f"a={quote}b",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.7",
        "REMOTE_PORT": "51234",
        "HTTP_USER_AGENT": f"agent {quote}quoted{quote}",
        "HTTP_REFERER": "https://example.com/",
        "HTTP_AUTHORIZATION": f"Basic {user}",
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
    }
    return resp, req, environ, timedelta(seconds=1, microseconds=234567)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _line(logger_class: type[Any], tmp_path: Path, access_log_format: str) -> tuple[str, bool]:
    """The lines written, and whether their records carried gunicorn's atoms."""
    cfg = Config()
    out = tmp_path / f"{logger_class.__name__}.log"
    cfg.set("accesslog", str(out))
    cfg.set("access_log_format", access_log_format)
    logger = logger_class(cfg)
    records = _Records()
    logging.getLogger("gunicorn.access").addHandler(records)
    for request in (_request(), _request(quote='"')):
        logger.access(*request)
    for handler in logging.getLogger("gunicorn.access").handlers:
        handler.flush()
    return out.read_text(), all(record.args for record in records.records)


@pytest.mark.parametrize(
    ("access_log_format", "lean"), [(DEFAULT, True), (EVERY_LETTER, True), (BRACED, True), (UNKNOWN, False)]
)
def test_lines_are_gunicorns(tmp_path: Path, access_log_format: str, lean: bool) -> None:
    ours, atoms = _line(AccessLogger, tmp_path, access_log_format)
    theirs, _ = _line(glogging.Logger, tmp_path, access_log_format)
    assert ours == theirs
    assert atoms is not lean  # the cheap path where it can, gunicorn's where it cannot
    assert len(ours.splitlines()) == 2
    if access_log_format == DEFAULT:
        assert ours.splitlines()[1] == (
            '10.0.0.7 - ops [04/Dec/2026:12:00:00 +0000] "POST /webhooks/src_1?a=\\"b HTTP/1.1" 202 57 '
            '"https://example.com/" "agent \\"quoted\\""'
        )


def test_a_logging_configuration_gets_gunicorns_record(tmp_path: Path) -> None:
    """Filters of a logging configuration may read the atoms (`record.args`, say to drop health
    checks): with one, the record is gunicorn's."""
    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("logconfig_dict", {"version": 1, "disable_existing_loggers": False})
    logger = AccessLogger(cfg)
    records = _Records()
    logging.getLogger("gunicorn.access").addHandler(records)
    logger.access(*_request())
    (record,) = records.records
    assert isinstance(record.args, dict)
    assert record.args["s"] == "202" and record.args["U"] == "/webhooks/src_1"


def test_the_shipped_configuration_uses_it() -> None:
    cfg = Config()
    for name in ("accesslog", "logger_class"):
        cfg.set(name, getattr(gunicorn_conf, name))
    assert cfg.logger_class is AccessLogger
    assert cfg.accesslog == "-"
