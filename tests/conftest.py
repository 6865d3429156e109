"""pytest fixtures of the smtpauthd protocol tests; the helpers themselves
live in smtptest.py.

Run: /usr/bin/python3 -m pytest tests/   (SMTPAUTHD=/abs/path/to/binary to
test another build, e.g. smtpauthd-asan; KEEP_TEST_DIRS=1 keeps the temp
directories for a post-mortem).
"""

import os
import pwd
import shutil
import subprocess

import pytest

import smtptest


@pytest.fixture(scope="session")
def stage():
    if not os.access(smtptest.BINARY, os.X_OK):
        pytest.fail("smtpauthd binary not found at %s (build it first, or set "
                    "SMTPAUTHD)" % smtptest.BINARY, pytrace=False)
    err = smtptest.ensure_helpers()
    if err:
        pytest.fail(err, pytrace=False)
    st = smtptest.Stage()
    yield st
    if not os.environ.get("KEEP_TEST_DIRS"):
        st.cleanup()


@pytest.fixture
def env(stage):
    e = smtptest.Env(stage)
    yield e
    e.cleanup()
    bad = e.sanitizer_reports()
    if bad:
        pytest.fail("sanitizer report in smtpauthd's stderr:\n" + "\n".join(bad),
                    pytrace=False)


@pytest.fixture
def pam_env(env):
    """An Env authenticating through pam_wrapper + pam_counter + pam_matrix."""
    env.use_pam()
    return env


def pytest_report_header(config):
    return ["smtpauthd binary: %s" % smtptest.BINARY,
            "running smtpauthd as uid %d (%s)" % (smtptest.RUN_UID, smtptest.RUN_NAME)]


def have(prog):
    return shutil.which(prog) is not None


def ensure_privsep_user():
    """The default privsep-user, smtpauthd, as `make install` makes it
    (created when missing, and left in place).  Returns its passwd entry,
    or an error text."""
    try:
        return pwd.getpwnam("smtpauthd")
    except KeyError:
        pass
    if not have("useradd"):
        return "useradd not installed"
    r = subprocess.run(["useradd", "--system", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell",
                        "/usr/sbin/nologin", "smtpauthd"],
                       capture_output=True, timeout=60)
    try:
        return pwd.getpwnam("smtpauthd")
    except KeyError:
        return "useradd smtpauthd: %s" % r.stderr.decode(errors="replace")


@pytest.fixture(scope="session", autouse=True)
def privsep_user_when_root():
    """smtpauthd run as root refuses to start without its privsep-user:
    every test run as root needs it."""
    if smtptest.IS_ROOT:
        ensure_privsep_user()


@pytest.fixture(scope="session")
def privsep_user():
    """Root only: the privsep-user's passwd entry."""
    if not smtptest.IS_ROOT:
        pytest.skip("needs root")
    entry = ensure_privsep_user()
    if isinstance(entry, str):
        pytest.fail(entry, pytrace=False)
    return entry


@pytest.fixture(scope="session")
def pki(stage):
    """Test CA, intermediate and server certificates (smtptest.Pki)."""
    if not have("openssl"):
        pytest.skip("openssl not installed")
    return smtptest.Pki(stage.dir)
