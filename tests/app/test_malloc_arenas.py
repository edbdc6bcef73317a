"""The web server's cap on glibc's malloc arenas (app/gunicorn_conf.py): threads started after
gunicorn's `on_starting` share two arenas, where each used to get its own, and a
`MALLOC_ARENA_MAX` set by the operator is left as it is."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Eight threads, alive together, each allocating objects beyond pymalloc's 512 bytes (so from
# glibc's malloc); then the number of heaps (arenas) glibc reports.
ARENAS_AFTER_THREADS = """
import ctypes, os, sys, tempfile, threading
from tributary.app import gunicorn_conf

if sys.argv[1] == "on_starting":
    gunicorn_conf.on_starting(None)
together = threading.Barrier(9)
held = []

def allocate():
    held.append([bytes(2000) for _ in range(100)])
    together.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
together.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fd, path = tempfile.mkstemp()
os.close(fd)
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


def _arenas(mode: str, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_AFTER_THREADS, mode],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


def test_threads_share_two_arenas_after_on_starting() -> None:
    assert _arenas("plain") > 2  # glibc's own default: an arena per thread, up to 8 per CPU
    assert _arenas("on_starting") == 2


def test_the_operators_malloc_arena_max_wins() -> None:
    assert _arenas("on_starting", MALLOC_ARENA_MAX="4") == 4
