"""Start-up time of the console script: how long `promptdiff --help` and friends take.

    python benchmarks/cli_startup.py [--runs 5]

Runs each command `runs` times as a fresh process (`python -m promptdiff.cli.main ...`, which is
what the `promptdiff` script runs) and prints the median wall time. `--help`, `--version` and
`families` import neither Lightning nor the models; `fit --help` builds LightningCLI's parser,
so it pays for importing Lightning and every method.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = (["--version"], ["--help"], ["families"], ["data", "info", "--help"], ["fit", "--help"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; median of {args.runs} fresh processes")
    for command in COMMANDS:
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "promptdiff.cli.main", *command], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            times.append(time.perf_counter() - start)
        print(f"promptdiff {' '.join(command):<18} {statistics.median(times):5.2f} s  "
              f"(min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
