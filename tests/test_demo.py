"""The README's first command, `make run`, as a new user runs it: in a
copy of the built tree, it serves; each client command it prints is run as
printed (through sh) and must get 250 with the message kept in run/mail/;
Ctrl-C stops it, leaving no process and no listener behind.

The demo serves the normal build (./smtpauthd), whichever binary the rest
of the suite is testing, so it runs in the pass over that build only."""

import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from smtptest import BINARY, IS_ROOT, REPO, free_port, listening

pytestmark = [
    pytest.mark.skipif(BINARY != os.path.join(REPO, "smtpauthd"),
                       reason="the demo serves ./smtpauthd: tested in its "
                              "own pass"),
    pytest.mark.skipif(shutil.which("make") is None or
                       shutil.which("systemd-socket-activate") is None or
                       shutil.which("swaks") is None,
                       reason="make, systemd-socket-activate and swaks "
                              "needed (tools/packages: run)"),
]

# What the copy leaves out: history, a demo's state, other builds' objects.
SKIP = {".git", "run", "fuzz", "lint", "scan-build", "__pycache__"}


@pytest.fixture
def tree():
    """A copy of the built repository (times kept, so make finds the
    programs up to date), searchable by everyone: run as root, the demo
    runs tools/run-sendmail as nobody."""
    top = tempfile.mkdtemp(prefix="smtpauthd-demo.")
    os.chmod(top, 0o755)
    dest = os.path.join(top, "smtpauthd")
    shutil.copytree(REPO, dest, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in SKIP])
    yield dest
    if not os.environ.get("KEEP_TEST_DIRS"):
        shutil.rmtree(top, ignore_errors=True)


def group_alive(pgid):
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_for(cond, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_make_run_serves_the_commands_it_prints(tree):
    port, tls_port = free_port(), free_port()
    while tls_port == port:
        tls_port = free_port()
    env = dict(os.environ, PORT=str(port), TLS_PORT=str(tls_port),
               SENDMAIL=os.path.join(tree, "tools", "run-sendmail"),
               LC_ALL="C")
    env.pop("SUDO_USER", None)
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    out_path = os.path.join(os.path.dirname(tree), "make-run.out")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=tree, env=env,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)

    def output():
        with open(out_path, errors="replace") as f:
            return f.read()

    try:
        wait_for(lambda: "Ctrl-C stops." in output() or
                 proc.poll() is not None, 120, "make run to serve")
        assert proc.poll() is None, output()
        wait_for(lambda: listening(port) and listening(tls_port), 20,
                 "both listeners")
        text = output()
        # make found the programs built: nothing compiled in the copy
        assert not re.search(r"^(cc|gcc|clang) ", text, re.M), text
        commands = [line.strip() for line in text.splitlines()
                    if line.startswith("  swaks ")]
        assert len(commands) == 2, text
        assert "--tls " in commands[0] and "--tlsc " in commands[1], commands
        for n, command in enumerate(commands, 1):
            r = subprocess.run(["sh", "-c", command], capture_output=True,
                               timeout=120, env=dict(os.environ, LC_ALL="C"),
                               stdin=subprocess.DEVNULL)
            said = r.stdout.decode(errors="replace") + \
                r.stderr.decode(errors="replace")
            assert r.returncode == 0, (command, said, output())
            assert re.search(r"^<~ +250 2\.0\.0 Ok: queued as [0-9A-F]{16}$",
                             said, re.M), (command, said)
            kept = sorted(glob.glob(os.path.join(tree, "run", "mail",
                                                 "*.eml")))
            assert len(kept) == n, (kept, output())
        user = re.search(r"^  user: +(\S+)$", text, re.M).group(1)
        for eml in kept:
            with open(eml, "rb") as f:
                message = f.read()
            assert b"(authenticated user %s)" % user.encode() in message, \
                message[:600]
            with open(eml[:-len(".eml")] + ".argv") as f:
                argv = f.read().splitlines()
            assert argv[1:] == ["-i", "-f", "%s@localhost" % user, "--",
                                "%s@localhost" % user], argv
        if IS_ROOT:
            assert user != "root", user
    finally:
        # Ctrl-C, as the demo says: the whole foreground group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("make run did not stop on Ctrl-C")
    # (Not "nothing listens on the ports": another test may have taken
    # them since; the demo's processes are what must be gone.)
    wait_for(lambda: not group_alive(proc.pid), 10,
             "the demo's processes to end")
