"""What a run id looks like (``r-20261130-3f9c2a``), and how a new one is made. Standard library only:
the log setup and the parser use it without loading the rest of the kernel."""
from __future__ import annotations

import re
import secrets
import time

RUN_ID = re.compile(r"\br-\d{8}-[0-9a-f]{6}\b")


def new_run_id() -> str:
    """The day it was asked for, and six random hex digits."""
    return f"r-{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
