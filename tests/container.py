"""systemd booted as PID 1 in a container over the host's /usr
(systemd-nspawn --directory=/ --volatile=yes): a disposable /etc and /var
for the tests that need the real thing there (test_systemd: the shipped
units; test_ldap: NSS and PAM through a directory).  test_systemd.py's
docstring says how the container is made and why each option.
"""

import os
import signal
import subprocess
import time

import smtptest


def bind_files(directory, texts, target, binds):
    """Each of texts ({name: text}) written as a world-readable file of
    directory, and bound at target/name (appended to binds)."""
    for name, text in texts.items():
        p = os.path.join(directory, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o644)
        binds.append((p, os.path.join(target, name)))


def boot_target(description, units):
    """The unit the container boots to: the units under test, and the
    journal, so that their log lines can be read."""
    return ("[Unit]\nDescription=smtpauthd test: %s\n" % description +
            "Wants=%s\n" % " ".join(units) +
            "Wants=systemd-journald.socket systemd-journald-dev-log.socket\n"
            "AllowIsolate=yes\n")


class Container:
    """systemd booted in a container over the host's /usr (see the top)."""

    def __init__(self, top, binds_ro, binds_rw, unit):
        self.log = os.path.join(top, "nspawn.log")
        cmd = ["systemd-nspawn", "--directory=/", "--volatile=yes",
               "--register=no", "--keep-unit", "--console=passive"]
        cmd += ["--bind-ro=%s:%s" % b for b in binds_ro]
        cmd += ["--bind=%s:%s" % b for b in binds_rw]
        cmd += ["--boot", "systemd.firstboot=off", "systemd.unit=" + unit]
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pid1 = None
        self.pidns = None

    def find_pid1(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("systemd-nspawn exited %s:\n%s" % (
                    self.proc.returncode, self.output()))
            for pid in children(self.proc.pid):
                if nspid(pid) == 1:
                    self.pid1 = pid
                    self.pidns = os.readlink("/proc/%d/ns/pid" % pid)
                    return pid
            time.sleep(0.05)
        raise AssertionError("no PID 1 in the container:\n" + self.output())

    def output(self):
        return smtptest.read_log(self.log)[-5000:]

    def run(self, *cmd, timeout=30):
        """A command inside (nsenter into PID 1's namespaces)."""
        return subprocess.run(["nsenter", "--target", str(self.pid1), "--all",
                               "--"] + list(cmd), capture_output=True,
                              text=True, timeout=timeout)

    def systemctl(self, *args):
        return self.run("systemctl", "--no-pager", *args)

    def prop(self, unit, name):
        return self.systemctl("show", "-P", name, unit).stdout.strip()

    def journal(self):
        return self.run("journalctl", "--no-pager", "-o", "cat",
                        "SYSLOG_IDENTIFIER=smtpauthd").stdout

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Nothing of the container may be left.
        deadline = time.monotonic() + 10
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.leftovers()
        return left

    def leftovers(self):
        if self.pidns is None:
            return []
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if os.readlink("/proc/%s/ns/pid" % p) == self.pidns:
                        out.append(int(p))
                except OSError:
                    pass
        return out


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def nspid(pid):
    """The innermost pid of process pid (NSpid in /proc/PID/status)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None
