"""benchlib.py - what the benchmarks share: a free loopback port, a server
behind systemd-socket-activate, reading one SMTP reply, percentiles, the
CPU of the activator's reaped children, and a bench directory (password
file, discarding sendmail, configuration), the processes of a
connection."""
import base64
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


def write_accounts(tmp, hasher, user, password):
    """In tmp: passwd (user:hash, the hash printed by hasher, a command
    reading the password on its input) and sendmail (sh and cat: reads
    the message and discards it)."""
    h = subprocess.run(hasher, input=password + "\n", capture_output=True,
                       text=True, check=True).stdout.strip()
    with open(f"{tmp}/passwd", "w") as fp:
        fp.write(f"{user}:{h}\n")
    os.chmod(f"{tmp}/passwd", 0o600)
    with open(f"{tmp}/sendmail", "w") as fp:
        fp.write("#!/bin/sh\nexec cat >/dev/null\n")
    os.chmod(f"{tmp}/sendmail", 0o755)


def bench_dir(hasher, user="nobody", password="bench-password"):
    """A directory for one run, with write_accounts' files.  Returns its
    path."""
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    write_accounts(tmp, hasher, user, password)
    return tmp


# For memory_cost.py and callgrind.py: the setup privsep_cost.py and
# store_cost.py each write out, and the processes of a connection.
USER, PASSWORD = "nobody", "bench-password"


def plain_blob(user=USER, password=PASSWORD):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            password.encode())


def write_setup(binary, tmp, extra=""):
    """In tmp: write_accounts' files for USER (hashed by binary -H) and a
    configuration (auth file, no TLS, the state store in tmp, limits never
    reached) plus extra; its path."""
    write_accounts(tmp, [binary, "-H"], USER, PASSWORD)
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
