"""services - the outside programs a fleet of smtpauthd hosts runs with,
started by the tests themselves on loopback and stopped after: a
redis-server (test_store.py, test_fleet.py) and Debian's haproxy in TCP
mode (test_fleet.py).  Each lives in a directory of its own and saves
nothing.  A missing program skips, or fails under SMTPAUTHD_REQUIRE_E2E=1
(CI), as the end-to-end tests do (e2e.skip)."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

import e2e
from smtptest import free_port, listening

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Redis:
    """One redis-server on 127.0.0.1:port and a unix socket, in a
    directory of its own, nothing saved.  down() and up() stop it and
    start it again on the same port, empty."""

    def __init__(self, password=None):
        if not os.access(REDIS_SERVER, os.X_OK):
            e2e.skip("redis-server not installed (apt-get install "
                     "redis-server)")
        self.dir = tempfile.mkdtemp(prefix="redis.")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "redis.sock")
        self.password = password
        self.port = free_port()
        self.proc = None
        self.up()
        self.url = "redis://127.0.0.1:%d" % self.port

    def up(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", self.sock, "--unixsocketperm", "777",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--logfile", "",
                "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        # Ready when it answers; bounded, not a fixed sleep.
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.cli("PING").strip() in ("PONG", "NOAUTH"):
                    break
            except subprocess.CalledProcessError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("redis-server did not start", pytrace=False)
            time.sleep(0.02)

    def down(self):
        _stop(self.proc)

    def cli(self, *args):
        cmd = [REDIS_CLI, "-s", self.sock, "--no-auth-warning"]
        if self.password:
            cmd += ["-a", self.password]
        return subprocess.run(cmd + list(args), capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def stop(self):
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def fleet_haproxy_conf(port, servers, check=None):
    """haproxy in TCP mode on 127.0.0.1:port, round robin over servers
    ((name, address, port) each) from 127.0.0.1 with send-proxy-v2 (a
    listed peer's address), and with check ("inter 200ms fall 3 rise 1")
    a TCP health check."""
    lines = ["global", "    maxconn 100", "defaults", "    mode tcp",
             "    timeout connect 5s", "    timeout client 30s",
             "    timeout server 30s"]
    if check:
        lines.append("    timeout check 5s")
    lines += ["frontend submission", "    bind 127.0.0.1:%d" % port,
              "    default_backend fleet", "backend fleet",
              "    balance roundrobin", "    source 127.0.0.1",
              "    default-server send-proxy-v2" +
              (" check " + check if check else "")]
    lines += ["    server %s %s:%d" % s for s in servers]
    return "\n".join(lines) + "\n"


class Haproxy:
    """haproxy -db with the configuration text conf, its log (stderr) in
    directory/haproxy.log; ready when every port of ports listens on
    127.0.0.1."""

    def __init__(self, directory, conf, ports):
        if not os.access(HAPROXY, os.X_OK):
            e2e.skip("haproxy not installed (tools/packages: test haproxy)")
        self.conf = os.path.join(directory, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.logpath = os.path.join(directory, "haproxy.log")
        with open(self.logpath, "wb") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.conf],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)
        deadline = time.monotonic() + 10
        while not all(listening(p) for p in ports):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("haproxy did not listen: %s" % self.log,
                            pytrace=False)
            time.sleep(0.05)

    @property
    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
