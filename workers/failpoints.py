"""Named pause points for fault-injection tests (the worker-killed-mid-batch test).

Inert unless `TRIBUTARY_FAILPOINT` names the point: then the process writes the point's name to
`TRIBUTARY_FAILPOINT_FILE` (so the test knows where it is) and sleeps until it is killed, or, when
`TRIBUTARY_FAILPOINT_RELEASE` names a file, until that file exists (the point then stays open).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def failpoint(name: str) -> None:
    if os.environ.get("TRIBUTARY_FAILPOINT") != name:
        return
    marker = os.environ.get("TRIBUTARY_FAILPOINT_FILE")
    if marker:
        Path(marker).write_text(name)
    release = os.environ.get("TRIBUTARY_FAILPOINT_RELEASE")
    while not (release and Path(release).exists()):
        time.sleep(0.05 if release else 3600)
