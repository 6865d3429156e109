"""benchlib.py - what the benchmarks share: a free loopback port, a server
behind systemd-socket-activate, reading one SMTP reply, percentiles."""
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
