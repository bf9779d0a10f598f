"""Start-up time of the ``wsseg`` command line: wall time and ``python -X importtime`` of a few quick commands.

Each command runs ``--reps`` times, the commands interleaved round-robin so that a change in the machine's load
touches all of them alike; the table gives the median and the range. ``python -c "import typer"`` is the floor
(the interpreter plus the CLI framework), measured in the same loop. ``--baseline PYTHON`` adds the same commands
run by another checkout's interpreter (e.g. ``/work/main/.venv/bin/python``) for a before/after comparison.

Usage::

    python benchmarks/perf/cli_startup.py --reps 5 [--baseline /path/to/other/.venv/bin/python]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The console script (bin/wsseg beside the interpreter), as a user types it; run from an empty folder, so that no
# checkout in the working directory shadows the installed package.
COMMANDS = {
    'python -c "import typer"': ["-c", "import typer"],
    "wsseg --help": ["WSSEG", "--help"],
    "wsseg --version": ["WSSEG", "--version"],
    "wsseg list methods": ["WSSEG", "list", "methods"],
    "wsseg list methods --check": ["WSSEG", "list", "methods", "--check"],
}
HEAVY = ("torch", "timm", "torchvision", "pandas", "matplotlib", "segmentation_models_pytorch")


def _argv(python: str, args: list[str]) -> list[str]:
    """``python args`` with ``WSSEG`` standing for the ``wsseg`` script installed beside ``python``."""
    script = str(Path(python).parent / "wsseg")
    return [python, *(script if a == "WSSEG" else a for a in args)]


def wall(python: str, args: list[str], cwd: str) -> float | None:
    """Seconds of one run of ``python args`` (output discarded); None where the command fails (an older wsseg)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # never write into another checkout
    argv = _argv(python, args)
    t = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    return time.perf_counter() - t if done.returncode == 0 else None


def import_profile(python: str, args: list[str], cwd: str) -> tuple[float, list[tuple[str, float]]]:
    """Total import seconds of a command (sum over top-level imports) and the heavy packages' cumulative seconds."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [python, "-X", "importtime", *_argv(python, args)[1:]],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=cwd,
    )
    total, heavy = 0.0, {}
    for line in result.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m is None:
            continue
        cumulative, depth, name = int(m.group(2)) / 1e6, len(m.group(3)), m.group(4)
        if depth == 1:  # a top-level import of the command
            total += cumulative
        if name in HEAVY:  # a package's own line is its largest (it includes its submodules)
            heavy[name] = max(cumulative, heavy.get(name, 0.0))
    return total, sorted(heavy.items(), key=lambda kv: -kv[1])


def main() -> None:
    """Print a Markdown table of the medians and the import profiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline", help="another interpreter whose `-m wsseg` is the 'before'")
    args = parser.parse_args()
    pythons = {"this checkout": sys.executable}
    if args.baseline:
        pythons["baseline"] = args.baseline
    cwd = tempfile.mkdtemp(prefix="wsseg-startup-")
    times: dict[tuple[str, str], list[float | None]] = {(p, c): [] for p in pythons for c in COMMANDS}
    for _ in range(args.reps):
        for label, python in pythons.items():
            for command, argv in COMMANDS.items():
                if label == "baseline" and command == 'python -c "import typer"':
                    continue
                times[(label, command)].append(wall(python, argv, cwd))
    print(f"| interpreter | command | median s | min-max s (n={args.reps}) |")
    print("| --- | --- | ---: | ---: |")
    for (label, command), values in times.items():
        if values and None in values:
            print(f"| {label} | `{command}` | fails | (not in this version) |")
        elif values:
            ok = [v for v in values if v is not None]
            print(f"| {label} | `{command}` | {statistics.median(ok):.2f} | {min(ok):.2f}-{max(ok):.2f} |")
    print()
    print("| interpreter | command | import s (one run) | heavy packages imported (cumulative s) |")
    print("| --- | --- | ---: | --- |")
    for label, python in pythons.items():
        for command, argv in COMMANDS.items():
            if label == "baseline" and command == 'python -c "import typer"':
                continue
            if None in times[(label, command)]:  # a command this version lacks: its profile is that of an error
                print(f"| {label} | `{command}` | fails | (not in this version) |")
                continue
            total, heavy = import_profile(python, argv, cwd)
            listed = ", ".join(f"{name} {s:.2f}" for name, s in heavy) or "none"
            print(f"| {label} | `{command}` | {total:.2f} | {listed} |")
    os.rmdir(cwd)


if __name__ == "__main__":
    main()
