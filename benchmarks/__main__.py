"""`python -m benchmarks [NAME ...]`: run every bench_*.py (or the named ones) in this process, in order."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(names: list[str]) -> int:
    found = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    chosen = [n for n in found if not names or n in names or n.removeprefix("bench_") in names]
    if not chosen:
        print(f"no benchmark matches {names}; have: {', '.join(found)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"--- {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
