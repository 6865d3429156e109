"""benchlib.py - what the benchmarks share: a free loopback port, a server
behind systemd-socket-activate, reading one SMTP reply, percentiles, the
CPU of the activator's reaped children, and a bench directory (password
file, discarding sendmail, configuration)."""
import os
import socket
import subprocess
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(binary, conf, *args):
    """Starts binary -f conf [args] per connection; returns (proc, port)."""
    return serve_argv([binary, "-f", conf, *args])


def serve_argv(argv):
    """Starts argv per connection; returns (proc, port)."""
    port = free_port()
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--inetd",
         "-a", *argv],
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


def children_cpu(proc):
    """Seconds of CPU of the reaped children of proc, once none is left."""
    return children_cpu_pid(proc.pid)


def children_cpu_pid(pid):
    """Seconds of CPU of the reaped children of pid, once none is left."""
    for _ in range(5000):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fp:
                if fp.read().strip() == "":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.002)
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    # After ")": state is fields[0], so cutime and cstime (the 16th and
    # 17th fields of proc(5)) are fields[13] and fields[14].
    return (int(fields[13]) + int(fields[14])) / TICK


def bench_dir(hasher, user="nobody", password="bench-password"):
    """A directory for one run: passwd (user:hash, the hash printed by
    hasher, a command reading the password on its input), sendmail (sh and
    cat: reads the message and discards it).  Returns its path."""
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    h = subprocess.run(hasher, input=password + "\n", capture_output=True,
                       text=True, check=True).stdout.strip()
    with open(f"{tmp}/passwd", "w") as fp:
        fp.write(f"{user}:{h}\n")
    os.chmod(f"{tmp}/passwd", 0o600)
    with open(f"{tmp}/sendmail", "w") as fp:
        fp.write("#!/bin/sh\nexec cat >/dev/null\n")
    os.chmod(f"{tmp}/sendmail", 0o755)
    return tmp
