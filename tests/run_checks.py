#!/usr/bin/python3
"""run_checks.py - what `make check` runs: the C unit tests (TAP) of the
normal and the sanitizer build, then the protocol test suite (pytest)
against both binaries.  Ends with one line a CI can read:
"check: N passed, N failed, N skipped"."""

import os
import re
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZER_ENV = {
    # Leaks and every UBSan report are failures; the suite reads stderr.
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99:"
                    "verify_asan_link_order=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
}


def run_tap(binary, env):
    """Runs one TAP program; returns (passed, failed)."""
    print(f"== unit tests: {binary}", flush=True)
    proc = subprocess.run([os.path.join(TOP, binary)], cwd=TOP, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", check=False)
    passed = failed = 0
    planned = None
    for line in proc.stdout.splitlines():
        if line.startswith("ok "):
            passed += 1
        elif line.startswith("not ok "):
            failed += 1
            print("   ", line)
        elif re.match(r"^1\.\.\d+$", line):
            planned = int(line[3:])
        elif line.strip():
            print("   ", line)
    if planned != passed + failed or proc.returncode != 0:
        print(f"   plan {planned}, ran {passed + failed}, exit "
              f"{proc.returncode}")
        failed += 1
    print(f"   {passed} passed, {failed} failed", flush=True)
    return passed, failed, 0


def parallel_args():
    """pytest-xdist's arguments (tools/packages has it): PYTEST_WORKERS
    processes (default 3: most tests wait on timers and sockets, so three
    keep two cores busy), each taking whole files, so that a module's
    fixtures (accounts, Postfix) stay in one process.  PYTEST_WORKERS=0
    runs the suite in this process."""
    workers = os.environ.get("PYTEST_WORKERS", "3")
    if not workers.isdigit():
        sys.exit("run_checks.py: PYTEST_WORKERS=%r is not a number" % workers)
    if int(workers) == 0:
        return []
    return ["-n", workers, "--dist", "loadfile"]


def run_pytest(binary, env):
    print(f"== protocol tests: {binary}", flush=True)
    env = dict(env, SMTPAUTHD=os.path.join(TOP, binary))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p",
         "no:cacheprovider"] + parallel_args() + [os.path.join(TOP, "tests")],
        cwd=TOP, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", check=False)
    print(proc.stdout, flush=True)
    counts = {}
    for line in proc.stdout.splitlines()[-5:]:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|error)",
                                  line):
            counts[what] = int(n)
    failed = counts.get("failed", 0) + counts.get("error", 0)
    if proc.returncode not in (0, 1) or not counts:
        failed += 1     # pytest itself broke, or ran nothing
    return counts.get("passed", 0), failed, counts.get("skipped", 0)


def main():
    base = dict(os.environ)
    total = [0, 0, 0]
    steps = [
        (run_tap, "tests/unit", base),
        (run_tap, "tests/unit-asan", dict(base, **SANITIZER_ENV)),
        (run_pytest, "smtpauthd", base),
        (run_pytest, "smtpauthd-asan", dict(base, **SANITIZER_ENV)),
    ]
    for fn, binary, env in steps:
        result = fn(binary, env)
        for i in range(3):
            total[i] += result[i]
    print(f"check: {total[0]} passed, {total[1]} failed, "
          f"{total[2]} skipped")
    return 1 if total[1] else 0


if __name__ == "__main__":
    sys.exit(main())
