from __future__ import annotations

from ckptd.cli import main

main()
