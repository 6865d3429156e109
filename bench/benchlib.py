"""benchlib.py - what the benchmarks share: a free loopback port, a server
behind systemd-socket-activate, reading one SMTP reply, percentiles."""
import base64
import os
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(binary, conf, *args):
    """Starts binary -f conf [args] per connection; returns (proc, port)."""
    port = free_port()
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--inetd",
         "-a", binary, "-f", conf, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, port


def read_reply(f):
    """The last line of one (possibly multi-line) reply."""
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# For memory_cost.py and callgrind.py: the setup privsep_cost.py and
# store_cost.py each write out, and the processes of a connection.
USER, PASSWORD = "nobody", "bench-password"


def plain_blob(user=USER, password=PASSWORD):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            password.encode())


def write_setup(binary, tmp, extra=""):
    """In tmp: a password file for USER (hashed by binary -H), a sendmail
    that discards its input and a configuration (auth file, no TLS, the
    state store in tmp, limits never reached) plus extra; its path."""
    h = subprocess.run([binary, "-H"], input=PASSWORD + "\n",
                       capture_output=True, text=True,
                       check=True).stdout.strip()
    with open(f"{tmp}/passwd", "w") as fp:
        fp.write(f"{USER}:{h}\n")
    os.chmod(f"{tmp}/passwd", 0o600)
    with open(f"{tmp}/sendmail", "w") as fp:
        fp.write("#!/bin/sh\nexec cat >/dev/null\n")
    os.chmod(f"{tmp}/sendmail", 0o755)
    conf = f"{tmp}/smtpauthd.conf"
    with open(conf, "w") as fp:
        fp.write(f"hostname bench.example\nauth file\n"
                 f"passwd-file {tmp}/passwd\nauth-require-tls no\n"
                 f"sendmail {tmp}/sendmail\nstate sqlite:{tmp}/state.db\n"
                 f"auth-limit-ip 10000/1d\nauth-limit-net 10000/1d\n"
                 f"auth-limit-user 10000/1d\n"
                 f"user-recipient-limit 10000/1h, 10000/1d\n"
                 f"user-message-limit 100000/1h\n{extra}")
    return conf


def children(pid):
    """The pids of pid's children (every thread's)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fp:
                out += [int(p) for p in fp.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def descendants(pid):
    """pid's children, theirs, and so on (not pid itself)."""
    out, todo = [], children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def wait_no_children(pid, tries=1000):
    for _ in range(tries):
        if not children(pid):
            return True
        time.sleep(0.005)
    return False


def say(s, f, line, want):
    """Sends one command, raises SystemExit unless the reply starts so."""
    s.sendall(line + b"\r\n")
    r = read_reply(f)
    if not r.startswith(want):
        raise SystemExit(f"unexpected reply {r!r} to {line[:20]!r}")
    return r
