from __future__ import annotations

from tributary.app.cli import main

main()
