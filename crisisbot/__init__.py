"""crisisbot: turn an alarm into a running crisis room within seconds."""

import sys

__version__ = "0.1.0"

# httpx's package __init__ imports its command-line client (httpx._main: click, rich and
# pygments, ~80 modules and ~45 ms of the daemon's start) whenever those happen to be
# installed; crisisbot never runs that client. Marked absent, httpx skips it as it does
# when they are not installed (its `main` then asks for httpx[cli]).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
