"""The slow tiers (make test-slow / test-artefacts / test-studies): one pytest process per test file, two at a time.

Why not one pytest-xdist run: MindSpore keeps about 0.2 GB per compiled full-size model for the life of the
process, even after the model is deleted and the C heap trimmed (coat_small / coat_lite_medium built and run
three times each in one process: 1.03 -> 1.58 GB after each trim; benchmarks/compile_memory.py), so a worker that runs several full-size modules
grows to 8-10 GB; two such workers beside a documented command's own processes ran this 24 GB machine out of
memory (the kernel killed a worker). A process per file gives that memory back after every file.

    .venv/bin/python scripts/test_slow.py -m slow [--jobs 2] [--logs outputs/test-slow]

Each file's full output is kept in --logs; a line per file is printed as it ends, the failures' output at
the end, and the exit status is non-zero when any file failed (or nothing was selected).
"""
import argparse
import os
import subprocess
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist"]
# the two files that each take most of an hour here start first, so that neither is left running alone at the end
LONGEST = ("tests/test_doc_commands.py", "tests/test_recipes.py")


def selected_files(marker):
    """Test files with at least one test under the marker: LONGEST first, then by number of tests."""
    proc = subprocess.run(PYTEST + ["--collect-only", "-m", marker], cwd=ROOT, capture_output=True, text=True)
    ids = [line.split("::", 1)[0] for line in proc.stdout.splitlines() if "::" in line]
    if proc.returncode != 0 or not ids:
        sys.exit(f"error: no test selected by -m {marker!r} (pytest exit {proc.returncode})\n{proc.stdout[-2000:]}")
    ordered = [path for path, _ in Counter(ids).most_common()]
    return sorted(ordered, key=lambda path: LONGEST.index(path) if path in LONGEST else len(LONGEST))


def last_line(text):
    lines = [line.strip("= ") for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", dest="marker", default="slow", help="pytest marker expression (default: slow)")
    parser.add_argument("--jobs", type=int, default=2, help="test files run at once (default: 2)")
    parser.add_argument("--logs", default="outputs/test-slow", help="folder for each file's output")
    args = parser.parse_args()
    if args.jobs < 1:
        sys.exit("error: --jobs must be at least 1")
    files = selected_files(args.marker)
    logs = os.path.join(ROOT, args.logs)
    os.makedirs(logs, exist_ok=True)
    print(f"{len(files)} test files under -m {args.marker!r}, {args.jobs} at a time; output in {args.logs}/",
          flush=True)

    waiting, running, failed = list(files), {}, []
    start = time.time()
    while waiting or running:
        while waiting and len(running) < args.jobs:
            path = waiting.pop(0)
            log = open(os.path.join(logs, path.replace("/", "__") + ".txt"), "w")
            cmd = PYTEST + ["--durations=5", "-m", args.marker, path]
            running[path] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log, time.time())
        time.sleep(1)
        for path, (proc, log, began) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[path]
            with open(log.name) as f:
                text = f.read()
            status = "PASS" if proc.returncode == 0 else f"FAIL (exit {proc.returncode})"
            if proc.returncode != 0:
                failed.append((path, text))
            print(f"{status:16s} {path}: {last_line(text)} [{time.time() - began:.0f} s]", flush=True)

    for path, text in failed:
        print(f"\n===== {path} (last 80 lines) =====\n" + "\n".join(text.splitlines()[-80:]))
    minutes = (time.time() - start) / 60
    print(f"\n{len(files) - len(failed)} of {len(files)} test files passed in {minutes:.1f} min")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
