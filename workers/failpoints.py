"""Named pause points for fault-injection tests (the worker-killed-mid-batch test).

Inert unless `TRIBUTARY_FAILPOINT` names the point: then the process writes the point's name to
`TRIBUTARY_FAILPOINT_FILE` (so the test knows where it is) and sleeps until it is killed.
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
    while True:
        time.sleep(3600)
