"""tools/deps.sh and tools/packages: the one list of packages, as make run,
make check and .ci/run use it.  A package missing from the machine is
reported with the exact apt-get line, before anything is built or tested;
a list that cannot be read, or an unknown part, is an error, never a
silent "present"."""

import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from smtptest import IS_ROOT, REPO

MISSING = "nosuchpkg-smtpauthd-test"
LINE = "apt-get install --no-install-recommends " + MISSING


@pytest.fixture
def tree():
    """A copy of the sources (no build), its list naming a package that
    does not exist, readable by nobody too (so not under pytest's own
    temporary directory, which is root's alone)."""
    top = pathlib.Path(tempfile.mkdtemp(prefix="smtpauthd-deps."))
    os.chmod(top, 0o755)
    dest = top / "src"
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".git", "build", "run", "__pycache__", "smtpauthd", "smtpauthd-asan",
        "*.o", "*.so"))
    with open(dest / "tools" / "packages", "a") as f:
        f.write("test\t%s\n" % MISSING)
    for p in [dest] + list(dest.rglob("*")):
        os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)
    yield dest
    shutil.rmtree(top, ignore_errors=True)


def run(cmd, cwd, as_nobody=False, **env):
    kw = {}
    if as_nobody:
        pw = pwd.getpwnam("nobody")
        kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    e = dict(os.environ, **env)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        e.pop(k, None)
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=120, **kw)


def test_every_part_present_here():
    r = run(["sh", "tools/deps.sh", "build", "run", "test"], REPO,
            SMTPAUTHD_NO_INSTALL="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "packages present (build run test)" in r.stdout, r.stdout


def test_missing_package_prints_the_install_line(tree):
    r = run(["sh", "tools/deps.sh", "build", "test"], tree,
            SMTPAUTHD_NO_INSTALL="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].strip() == LINE, r.stdout
    # Only what is missing is named.
    assert "build-essential" not in r.stdout, r.stdout


def test_missing_package_of_another_part_is_not_asked_for(tree):
    r = run(["sh", "tools/deps.sh", "build", "run"], tree,
            SMTPAUTHD_NO_INSTALL="1")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(not IS_ROOT, reason="needs root (to run as nobody)")
def test_not_root_prints_the_install_line(tree):
    r = run(["sh", "tools/deps.sh", "test"], tree, as_nobody=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "as root, run:" in r.stdout and LINE in r.stdout, r.stdout


def test_make_check_stops_before_building(tree):
    """make check with a package missing: the install line, and no
    compiler run, no test run."""
    r = run(["make", "check"], tree, SMTPAUTHD_NO_INSTALL="1")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert LINE in out, out
    assert " -c -o build/" not in out and "pytest" not in out, out
    assert not os.path.exists(tree / "build"), out


def test_list_unreadable_or_part_unknown(tree):
    r = run(["sh", "tools/deps.sh", "tests"], tree, SMTPAUTHD_NO_INSTALL="1")
    assert r.returncode == 2 and 'unknown part "tests"' in r.stderr, r
    os.unlink(tree / "tools" / "packages")
    r = run(["sh", "tools/deps.sh", "build"], tree, SMTPAUTHD_NO_INSTALL="1")
    assert r.returncode == 2 and "cannot read" in r.stderr, r
