"""Long-running commands: `serve` (embedded all-in-one), `worker`, and `sweep`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from types import FrameType
from typing import Any

import click
from sqlalchemy import select

from tributary.app.accounts import create_key, ensure_account
from tributary.app.cli import cli, runtime
from tributary.app.cli.db import upgrade_and_bootstrap
from tributary.models import ApiKey
from tributary.runtime.config import record_public_url
from tributary.runtime.process import Runtime, install, redis_url_for
from tributary.workers.sweep import sweep
from tributary.workers.worker import TributaryWorker, prepare_heap


@cli.command("worker")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
def worker(burst: bool) -> None:
    """Apply queued events (run several, on several machines, to scale)."""
    rt = install(runtime())
    prepare_heap()
    TributaryWorker.started(rt).work(burst=burst, with_scheduler=True, logging_level="INFO")


@cli.command("sweep")
@click.option("--older-than", default=None, type=int, help="Seconds an event may wait (default: setting).")
def sweep_command(older_than: int | None) -> None:
    """Re-schedule events left pending (Redis was flushed or down when they arrived)."""
    rt = runtime()
    found = sweep(rt, timedelta(seconds=older_than) if older_than is not None else None)
    click.echo(f"{found} pending events rescheduled" if found else "nothing to sweep")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--web-workers", default=2, show_default=True, type=int, help="gunicorn processes.")
def serve(host: str, port: int, web_workers: int) -> None:
    """Run the web server and one worker together (the embedded default needs nothing else)."""
    ensure_port_free(host, port)
    rt = runtime()
    settings = rt.settings
    public_url = os.environ.get("TRIBUTARY_PUBLIC_URL") or f"http://{_url_host(host)}:{port}"
    env = dict(os.environ)
    env.update(
        TRIBUTARY_HOME=str(settings.home),
        DATABASE_URL=settings.database_url,
        REDIS_URL=redis_url_for(settings),  # starts the embedded server when REDIS_URL is unset
        TRIBUTARY_SECRET_KEY=settings.secret_key,
        TRIBUTARY_PUBLIC_URL=public_url,
    )
    admin_token = _first_start_admin_key(rt)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    # Installed before any child starts, so a SIGTERM at any point still stops every child.
    signal.signal(signal.SIGTERM, _stop)
    # Children run from the data directory, with -P, so a folder named `app` or `workers` in the
    # caller's working directory cannot shadow Tributary's packages.
    python = [sys.executable, "-P", "-m"]
    gunicorn = [
        *python, "gunicorn", "-c", "python:tributary.app.gunicorn_conf", "tributary.app.wsgi:app",
        "--bind", f"{host}:{port}", "--chdir", str(settings.home), "--workers", str(web_workers),
    ]  # fmt: skip
    worker = Restarting("worker", [*python, "tributary.app.cli", "worker"], env=env, cwd=settings.home)
    web: subprocess.Popen[bytes] | None = None
    exit_code = 0
    try:
        worker.start()
        web = subprocess.Popen(gunicorn, env=env, cwd=settings.home)  # noqa: S603
        wait_until_answering(f"http://{_url_host(host)}:{port}/healthz", [web])
        record_public_url(settings.home, public_url)
        banner = f"Tributary is running at {public_url}  (data: {settings.home})"
        if admin_token:
            banner += f"\nAdmin API key (shown once, keep it safe): {admin_token}"
        # One write, so a signal cannot land between the URL and the key it was meant to show.
        click.echo(banner)
        while web.poll() is None:
            worker.check()
            time.sleep(0.5)
        click.echo("the web server exited; shutting down", err=True)
        exit_code = 1
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        worker.signal(signal.SIGTERM)
        if web is not None and web.poll() is None:
            web.terminate()
        for child in (worker.process, web):
            if child is None:
                continue
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        worker.signal(signal.SIGKILL)  # whatever it left behind
    if exit_code:
        raise SystemExit(exit_code)


def _first_start_admin_key(rt: Runtime) -> str | None:
    """Create the schema; on first start (or with no key left) create and return an admin key."""
    first_start = upgrade_and_bootstrap()
    with rt.db.write_session() as session, session.begin():
        account, _ = ensure_account(session)
        has_admin = session.scalar(select(ApiKey.id).where(ApiKey.account_id == account.id).limit(1))
        if first_start or has_admin is None:
            return create_key(session, account.id, ["admin"], name="created by first start").token
    return None


def _url_host(host: str) -> str:
    # A server listening on every interface is reached, locally, on the loopback address.
    return "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)  # noqa: S104


def ensure_port_free(host: str, port: int) -> None:
    """Refuse to start when the address is taken, before anything is started or printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server running? "
                "choose another with --port)"
            ) from None


def wait_until_answering(url: str, children: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Return once `url` answers 200; fail if a child exits first or it never does."""
    deadline = time.monotonic() + timeout
    while True:
        if any(child.poll() is not None for child in children):
            raise click.ClickException("the server did not start (see the messages above)")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise click.ClickException(f"the server did not answer {url} within {timeout:.0f} s")
        time.sleep(0.2)


class Restarting:
    """A child process that is started again when it dies, after a pause that doubles with each
    quick death (a worker that cannot start must not spin) and resets once it has run a while.

    It runs in its own process group, so a worker killed outright does not leave its RQ scheduler
    process behind: the group goes with it, and the restarted worker starts a fresh one.
    """

    FIRST_DELAY_S = 1.0
    MAX_DELAY_S = 30.0
    HEALTHY_AFTER_S = 60.0

    def __init__(self, name: str, argv: list[str], **popen: Any) -> None:
        self.name, self.argv, self.popen = name, argv, popen
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._delay = self.FIRST_DELAY_S
        self._started_at = 0.0
        self._restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, start_new_session=True, **self.popen)  # noqa: S603
        self._started_at = time.monotonic()
        self._restart_at = None

    def check(self) -> None:
        """Call periodically: notices a death and restarts when the pause is over."""
        now = time.monotonic()
        if self._restart_at is not None:
            if now >= self._restart_at:
                self.restarts += 1
                click.echo(f"restarting the {self.name} (restart {self.restarts})", err=True)
                self.start()
            return
        if self.process is None or (code := self.process.poll()) is None:
            return
        self.signal(signal.SIGKILL)
        if now - self._started_at >= self.HEALTHY_AFTER_S:
            self._delay = self.FIRST_DELAY_S
        click.echo(f"the {self.name} exited with status {code}; restarting it in {self._delay:g} s", err=True)
        self._restart_at = now + self._delay
        self._delay = min(self._delay * 2, self.MAX_DELAY_S)

    def signal(self, signum: int) -> None:
        """Send `signum` to the child's whole process group (the child itself may be gone)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)
