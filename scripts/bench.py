"""Run a benchmark module of this repository as ``surgun_pack.benchmarks.<name>`` (see pack.py).

    python scripts/bench.py toy_canvas.erasure --quick
"""

from __future__ import annotations

import runpy
import sys

import pack


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: scripts/bench.py NAME [args]   (NAME: distractors, localizer, toy_canvas.erasure, toy_canvas.yardstick)")
    name = sys.argv[1]
    pack.load()
    sys.argv = [f"benchmarks/{name.replace('.', '/')}.py", *sys.argv[2:]]
    runpy.run_module(f"{pack.NAME}.benchmarks.{name}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
