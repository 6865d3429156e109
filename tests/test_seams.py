"""No test or benchmark seam in the shipped program: the sources the
program is built from name no BENCH_ switch, and the binary under test has
no writable hook through which code could be redirected (the session's
work is a parameter of privsep_split, which tests/monitor-probe gives its
own; the benchmarks' variants wrap functions at link time, bench/seams.c).
"""

import os
import re
import shutil
import subprocess

import pytest

from smtptest import BINARY, REPO


def program_sources():
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", REPO,
                        "print-objs"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    objs = r.stdout.split()
    assert len(objs) >= 10, objs
    return [os.path.join(REPO, os.path.basename(o)[:-2] + ".c")
            for o in objs] + [os.path.join(REPO, "smtpauthd.h")]


def test_sources_have_no_bench_switch():
    found = []
    for path in program_sources():
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if re.search(r"\bBENCH_|session_hook", line):
                    found.append("%s:%d: %s" % (os.path.basename(path), n,
                                                line.strip()))
    assert not found, found


def test_binary_has_no_hook():
    if shutil.which("nm") is None:
        pytest.skip("nm not installed")
    with open(BINARY, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip("the binary under test is a wrapper (check-valgrind)")
    r = subprocess.run(["nm", BINARY], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    symbols = {line.split()[-1] for line in r.stdout.splitlines() if line}
    assert "privsep_run" in symbols, "nm read no symbols"
    assert not [s for s in symbols if "hook" in s or "BENCH" in s], symbols
