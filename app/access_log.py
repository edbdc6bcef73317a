"""gunicorn's access log, line for line the same, for a fraction of its CPU.

gunicorn builds each access line from a dict of some sixty atoms (every request and response
header and every WSGI environ key, each escaped, then wrapped again), and logs it through
`Logger.info`, which walks the stack to find its caller. In one process that is ~70 us a request
for the nine atoms of the default format; served under open load it was 5-15 % of a webhook's web
CPU (bench/README.md). `AccessLogger` computes only the atoms the configured format names,
escapes only those, and gives the access logger a finished record: the same handlers, level and
filters apply, and the line is byte for byte gunicorn's.

It takes that path only while gunicorn's own handlers write the log (`accesslog`, as shipped).
With a logging configuration (`logconfig*`) or syslog, filters may read the record's atoms
(`record.args`, a common way to drop health checks), so the access log is gunicorn's own.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from gunicorn import glogging

# `%(key)s` in a format; keys in braces name a request header (`i`), response header (`o`) or
# environ variable (`e`), looked up without regard to case, as gunicorn's `SafeAtoms` does.
_KEY = re.compile(r"%\(([^)]*)\)")
_BRACED = re.compile(r"\{(.*)\}([ioe])", re.DOTALL)

Atom = Callable[["AccessLogger", Any, Any, Mapping[str, Any], timedelta], Any]


def _status(resp: Any) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any) -> Any:
    return getattr(resp, "sent", None)


# Settings under which a logging configuration, not gunicorn's handlers, decides what is written.
_CONFIGURED_LOGGING = ("logconfig", "logconfig_dict", "logconfig_json", "syslog")

# gunicorn's atoms (`glogging.Logger.atoms`), one function each; a test holds them to gunicorn's.
_ATOMS: dict[str, Atom] = {
    "h": lambda _log, _resp, _req, env, _t: env.get("REMOTE_ADDR", "-"),
    "l": lambda _log, _resp, _req, _env, _t: "-",
    "u": lambda log, _resp, _req, env, _t: log._get_user(env) or "-",
    "t": lambda log, _resp, _req, _env, _t: log.now(),
    "r": lambda _log, _resp, _req, env, _t: (
        f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"
    ),
    "s": lambda _log, resp, _req, _env, _t: _status(resp),
    "m": lambda _log, _resp, _req, env, _t: env.get("REQUEST_METHOD"),
    "U": lambda _log, _resp, _req, env, _t: env.get("PATH_INFO"),
    "q": lambda _log, _resp, _req, env, _t: env.get("QUERY_STRING"),
    "H": lambda _log, _resp, _req, env, _t: env.get("SERVER_PROTOCOL"),
    "b": lambda _log, resp, _req, _env, _t: str(resp.sent) if _sent(resp) is not None else "-",
    "B": lambda _log, resp, _req, _env, _t: _sent(resp),
    "f": lambda _log, _resp, _req, env, _t: env.get("HTTP_REFERER", "-"),
    "a": lambda _log, _resp, _req, env, _t: env.get("HTTP_USER_AGENT", "-"),
    "T": lambda _log, _resp, _req, _env, t: t.seconds,
    "D": lambda _log, _resp, _req, _env, t: t.seconds * 1000000 + t.microseconds,
    "M": lambda _log, _resp, _req, _env, t: t.seconds * 1000 + int(t.microseconds / 1000),
    "L": lambda _log, _resp, _req, _env, t: f"{t.seconds}.{t.microseconds:06d}",
    "p": lambda _log, _resp, _req, _env, _t: f"<{os.getpid()}>",
}


def _last(pairs: Iterable[tuple[str, Any]], name: str) -> Any:
    """The value gunicorn's dict of atoms would keep: the last pair whose name matches."""
    found: Any = "-"
    for key, value in pairs:
        if key.lower() == name:
            found = value
    return found


def _pairs(headers: Any) -> Iterable[tuple[str, Any]]:
    return headers.items() if hasattr(headers, "items") else headers  # type: ignore[no-any-return]


def _braced(key: str) -> Atom | None:
    """The atom for a braced key (`{name}i`, `{name}o`, `{name}e`), resolved once per format."""
    braced = _BRACED.fullmatch(key.lower())
    if braced is None:
        return None
    name, kind = braced.group(1), braced.group(2)
    if kind == "i":
        return lambda _log, _resp, req, _env, _t: _last(_pairs(getattr(req, "headers", req)), name)
    if kind == "o":
        return lambda _log, resp, _req, _env, _t: _last(_pairs(resp.headers), name)
    return lambda _log, _resp, _req, env, _t: _last(env.items(), name)


def _unknown(_log: Any, _resp: Any, _req: Any, _env: Mapping[str, Any], _t: timedelta) -> str:
    return "-"  # gunicorn's answer for a braced key it cannot parse


def _escaped(value: Any) -> Any:
    return value.replace('"', '\\"') if isinstance(value, str) else value


class AccessLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger with a cheaper `access` (module docstring)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # Each key resolved once to its atom, so a request only calls them.
        self._fields: list[tuple[str, Atom]] = []
        known = True
        for key in dict.fromkeys(_KEY.findall(cfg.access_log_format)):
            atom = _ATOMS.get(key) or _braced(key)
            if atom is None and not key.startswith("{"):
                known = False  # gunicorn's own path decides what an unknown key prints
            self._fields.append((key, atom or _unknown))
        # `getattr`: older gunicorns lack some of these settings.
        custom = any(getattr(cfg, name, None) for name in _CONFIGURED_LOGGING)
        self._lean = bool(cfg.accesslog) and known and not custom

    def access(self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: timedelta) -> None:
        if not self._lean:
            super().access(resp, req, environ, request_time)
            return
        logger = self.access_log
        if not logger.isEnabledFor(logging.INFO):
            return
        try:
            line = self.cfg.access_log_format % self._atoms(resp, req, environ, request_time)
            # Not `logger.info`: it would look up its caller's frame for a record nobody reads here.
            logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, None, None))
        except Exception:
            self.error(traceback.format_exc())

    def _atoms(
        self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: timedelta
    ) -> dict[str, Any]:
        return {key: _escaped(atom(self, resp, req, environ, request_time)) for key, atom in self._fields}
