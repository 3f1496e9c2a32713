"""Make sure headless Chromium is there for browser tests (Debian's package; no downloads
by test tools). Browser tests skip with a clear reason only if it cannot be installed."""

from __future__ import annotations

import shutil
import subprocess
import sys


def main() -> int:
    if shutil.which("chromium"):
        return 0
    if shutil.which("apt-get") is None:
        print("browser_setup: no apt-get; browser tests will be skipped", file=sys.stderr)
        return 0
    print("browser_setup: installing Debian's chromium for the browser tests…", file=sys.stderr)
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            print(f"browser_setup: {' '.join(command)} failed: {result.stderr.strip()[-300:]}", file=sys.stderr)
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
