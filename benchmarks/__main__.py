"""Run every benchmark module (or the ones named) one after the other."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    available = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    chosen = names or available
    unknown = [n for n in chosen if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        sys.argv = [f"bench_{name}"]  # benchmarks with options run on their defaults here
        try:
            importlib.import_module(f"benchmarks.bench_{name}").main()
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"benchmark {name} failed: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - started:.1f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
