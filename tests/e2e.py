"""e2e - shared helpers of the end-to-end tests (test_e2e_*.py): a real MTA
installed from the distribution's packages, real Unix accounts, the
installed PAM file /etc/pam.d/smtpauthd (pam_unix), smtpauthd run as root
through systemd-socket-activate with STARTTLS, real clients (smtplib,
swaks), and messages read back from the recipients' real mailboxes
(/var/mail/USER as mbox, or ~/Maildir).

Root only: each test module skips (need_root, skip) unless run as root with
the programs it names; with SMTPAUTHD_REQUIRE_E2E=1 in the environment (CI)
every such skip is a failure instead.  Everything made here is undone at
the end: accounts and their mailboxes (Accounts), the PAM file when these
helpers installed it (InstalledPam, shared by the runs holding it, whose
pids it records), the servers (Env.cleanup).  What a run killed on the way
left behind is found by the pid (and start time) it recorded, and undone by
the next run: accounts carrying its mark (ACCOUNT_MARK), the PAM file, the
servers still running (SERVERS_DIR).  The MTA itself
(its configuration, start and stop) is each module's business.
"""

import email.utils
import fcntl
import grp
import mailbox
import os
import pwd
import re
import shutil
import signal
import smtplib
import stat
import subprocess
import time

import pytest

import smtptest
from smtptest import IS_ROOT, REPO

# A suffix per run (as test_root.py), so that two runs at once do not
# trample each other's accounts.
SFX = "%04x" % (os.getpid() & 0xffff)

PAM_FILE = "/etc/pam.d/smtpauthd"
PAM_SRC = os.path.join(REPO, "pam.d", "smtpauthd")
PAM_LOCK = "/etc/pam.d"        # the directory is flock()ed while counting
PAM_STATE = "/run/smtpauthd-e2e-pam.state"   # PAM_STATE_HEAD, then lines
PAM_STATE_HEAD = "smtpauthd-e2e-pam 2"       # "created 0|1", "holder TOKEN"

# How an account these tests made is marked with the making run's token
# (see me()), so that a later run removes it when that run is gone, and
# never an account without the mark: the test accounts have a root-owned
# file ACCOUNT_MARK_FILE in their home holding it (their GECOS field is
# left empty: Exim puts it in the Sender: field), an account without a
# home (Debian-exim) has ACCOUNT_MARK and the token as its GECOS field.
ACCOUNT_MARK = "smtpauthd e2e test, run "
ACCOUNT_MARK_FILE = ".smtpauthd-e2e-run"

CLIENT_HELO = "client.e2e.example"

def skip(reason):
    """pytest.skip(reason), or pytest.fail when SMTPAUTHD_REQUIRE_E2E=1 (CI:
    an end-to-end test that did not run is a failure there)."""
    if os.environ.get("SMTPAUTHD_REQUIRE_E2E") == "1":
        pytest.fail(reason + " (SMTPAUTHD_REQUIRE_E2E is set)", pytrace=False)
    pytest.skip(reason)


def need_root(*progs):
    """skip() unless root with every program in progs (names or absolute
    paths) and systemd-socket-activate."""
    if not IS_ROOT:
        skip("end-to-end tests need root (accounts, /etc/pam.d, an MTA)")
    for p in progs + ("systemd-socket-activate", "useradd", "userdel",
                      "chpasswd", "openssl"):
        if (os.path.isabs(p) and not os.access(p, os.X_OK)) or \
                (not os.path.isabs(p) and shutil.which(p) is None):
            skip("%s not installed" % p)


# --------------------------------------------------------------------------
# runs: a process named by its pid and start time, so that a pid reused by
# another process does not pass for a run still going

def proc_start(pid):
    """The start time of process pid (clock ticks since boot, field 22 of
    /proc/PID/stat), or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            st = f.read()
    except (OSError, ValueError):
        return None
    try:
        return int(st[st.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def me():
    """This run's token: "PID-START"."""
    return "%d-%d" % (os.getpid(), proc_start(os.getpid()) or 0)


def alive(token):
    """Whether the run token ("PID-START", or a bare "PID") is still
    running; False for anything unreadable."""
    try:
        parts = str(token).strip().split("-")
        pid = int(parts[0])
        start = int(parts[1]) if len(parts) > 1 else None
    except (ValueError, IndexError):
        return False
    if pid <= 0:
        return False
    now = proc_start(pid)
    if now is None:
        return False
    return start is None or start == now


def pid_of(token):
    try:
        return int(str(token).split("-")[0])
    except ValueError:
        return 0


def sh(*cmd, input=None, timeout=60, ok=(0,)):
    """Run a command; assert its exit status is in ok.  The result."""
    r = subprocess.run(cmd, input=smtptest.to_bytes(input) if input else None,
                       capture_output=True, timeout=timeout)
    assert ok is None or r.returncode in ok, "%s: exit %d: %s%s" % (
        " ".join(cmd), r.returncode, r.stdout.decode(errors="replace"),
        r.stderr.decode(errors="replace"))
    return r


def wait_until(pred, timeout=30, step=0.1, what="condition"):
    """Poll pred() until it returns something true (returned), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(step)


# --------------------------------------------------------------------------
# accounts

class Accounts:
    """Real Unix accounts, made with useradd + chpasswd and removed (with
    their home, /var/mail file and group) by remove().  names: role ->
    account name; passwords: role -> password.  Each account is in its own
    group (useradd's USERGROUPS_ENAB), has a home and /bin/sh."""

    def __init__(self, names, password_fmt="E2e-%s-Pw!#9"):
        self.names = dict(names)
        self.passwords = {r: password_fmt % r for r in self.names}
        self.made = []

    def create(self):
        sweep_accounts()        # what killed runs left
        self.remove()           # leftovers of a killed run with our pid
        for role, name in self.names.items():
            sh("useradd", "-m", "-d", "/home/" + name, "-s", "/bin/sh", name)
            mark = os.path.join("/home", name, ACCOUNT_MARK_FILE)
            with open(mark, "w") as f:
                f.write(me() + "\n")
            os.chmod(mark, 0o644)
            self.made.append(name)
        sh("chpasswd", input="".join("%s:%s\n" % (self.names[r], self.passwords[r])
                                     for r in self.names))
        for name in self.names.values():
            remove_mailbox(name)
        return self

    def name(self, role):
        return self.names[role]

    def password(self, role):
        return self.passwords[role]

    def pw(self, role):
        return pwd.getpwnam(self.names[role])

    def uid(self, role):
        return self.pw(role).pw_uid

    def remove(self):
        for name in self.names.values():
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                remove_mailbox(name)
                continue
            if account_mark(pw) is None:
                continue        # not one of ours: never removed
            remove_account(name)
        self.made = []


def remove_account(name, home=True):
    """userdel (-r: with its home), its /var/mail file and its group."""
    subprocess.run(["userdel"] + (["-r"] if home else []) + ["-f", name],
                   capture_output=True, timeout=60)
    remove_mailbox(name)
    try:
        grp.getgrnam(name)
        subprocess.run(["groupdel", name], capture_output=True, timeout=60)
    except KeyError:
        pass


def account_mark(pw):
    """The token of the run that made the account (a passwd entry), or None
    when it carries no mark (see ACCOUNT_MARK)."""
    if pw.pw_gecos.startswith(ACCOUNT_MARK):
        return pw.pw_gecos[len(ACCOUNT_MARK):]
    if not pw.pw_dir.startswith("/home/") or pw.pw_uid == 0:
        return None
    path = os.path.join(pw.pw_dir, ACCOUNT_MARK_FILE)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
            return None
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def sweep_accounts():
    """Removes the accounts that killed runs made: those carrying the mark
    (ACCOUNT_MARK) of a run that is gone.  The names."""
    out = []
    for pw in pwd.getpwall():
        mark = account_mark(pw)
        if mark is not None and not alive(mark):
            remove_account(pw.pw_name, home=pw.pw_dir.startswith("/home/"))
            out.append(pw.pw_name)
    return out


def remove_mailbox(name):
    for p in ("/var/mail/" + name, "/var/mail/%s.lock" % name):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------
# the installed PAM file

class InstalledPam:
    """/etc/pam.d/smtpauthd as `make install` would put it: the repository's
    pam.d/smtpauthd, installed when absent.  A file already there is used
    as it is.  The runs holding it are recorded under a lock in PAM_STATE
    (their tokens, once per hold, and whether one of them installed the
    file), so that several modules or runs at once share it; a holder
    whose run is gone (killed) is dropped whenever the state is read.  The
    last live holder out removes the file, and only if a run installed
    it."""

    def __init__(self):
        self.held = False

    @staticmethod
    def read_state():
        """(created, [holder tokens]) of PAM_STATE, dead holders included;
        (False, []) when there is none.  The former format "USERS CREATED"
        (no pids) gives its CREATED and no holder."""
        try:
            with open(PAM_STATE) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return False, []
        if not lines or lines[0] != PAM_STATE_HEAD:
            try:
                return bool(int(" ".join(lines).split()[1])), []
            except (ValueError, IndexError):
                return False, []
        created, holders = False, []
        for line in lines[1:]:
            k, _, v = line.partition(" ")
            if k == "created":
                created = v.strip() == "1"
            elif k == "holder" and v.strip():
                holders.append(v.strip())
        return created, holders

    def _locked(self, fn):
        fd = os.open(PAM_LOCK, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            created, holders = self.read_state()
            holders = [h for h in holders if alive(h)]
            created, holders = fn(created, holders)
            if holders:
                tmp = PAM_STATE + ".tmp"
                with open(tmp, "w") as f:
                    f.write("%s\ncreated %d\n" % (PAM_STATE_HEAD, created))
                    f.writelines("holder %s\n" % h for h in holders)
                os.rename(tmp, PAM_STATE)
            else:
                if created:
                    try:
                        os.unlink(PAM_FILE)
                    except FileNotFoundError:
                        pass
                try:
                    os.unlink(PAM_STATE)
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)

    def acquire(self):
        def up(created, holders):
            if not os.path.exists(PAM_FILE):
                shutil.copyfile(PAM_SRC, PAM_FILE + ".e2e-tmp")
                os.chmod(PAM_FILE + ".e2e-tmp", 0o644)
                os.rename(PAM_FILE + ".e2e-tmp", PAM_FILE)
                created = True
            return created, holders + [me()]
        self._locked(up)
        self.held = True
        return PAM_FILE

    def release(self):
        if not self.held:
            return

        def down(created, holders):
            if me() in holders:
                holders.remove(me())
            return created, holders
        self._locked(down)
        self.held = False


# --------------------------------------------------------------------------
# smtpauthd as root under systemd-socket-activate, with STARTTLS

def deployment_conf(env, pki, sendmail, **kw):
    """Set env.conf to a real deployment's configuration: PAM (the service
    smtpauthd, i.e. the installed file), STARTTLS with the test PKI, AUTH
    only inside TLS, the MTA's sendmail, the default privsep-user and
    spool-dir.  Keyword arguments: more keys (underscores for hyphens;
    None removes a key)."""
    conf = env.conf
    for k in ("passwd-file", "privsep-user", "spool-dir", "pam-service"):
        conf.pop(k, None)
    conf.update({
        "auth": "pam",
        "tls": "starttls",
        "tls-cert": pki.path("chain.pem"),
        "tls-key": pki.path("leaf.key"),
        "auth-require-tls": "yes",
        "auth-failure-delay": "0",
        "sendmail": sendmail,
        "sendmail-timeout": "30",
        "inject": "envelope",
    })
    for k, v in kw.items():
        k = k.replace("_", "-")
        if v is None:
            conf.pop(k, None)
        else:
            conf[k] = str(v)
    return conf


SERVERS_DIR = "/run/smtpauthd-e2e-servers"   # RUN-TOKEN.SERVER-TOKEN files


def sweep_servers():
    """Kills the servers (their process groups) that runs now gone left
    running: SERVERS_DIR names each server with the run that started it."""
    try:
        names = os.listdir(SERVERS_DIR)
    except FileNotFoundError:
        return
    for n in names:
        run, _, server = n.partition(".")
        if alive(run):
            continue
        if alive(server):
            try:
                os.killpg(pid_of(server), signal.SIGKILL)
            except OSError:
                pass
        try:
            os.unlink(os.path.join(SERVERS_DIR, n))
        except FileNotFoundError:
            pass


class RootTcpServer(smtptest.TcpServer):
    """smtptest.TcpServer, but with systemd-socket-activate (and so the
    smtpauthd monitor) running as root, as the packaged socket unit does.
    Recorded in SERVERS_DIR while it runs, for sweep_servers()."""

    def __init__(self, env, confpath, environ=None):
        super().__init__(env, confpath, environ, as_root=True)

    def started(self):
        self.record = os.path.join(SERVERS_DIR, "%s.%d-%d" % (
            me(), self.proc.pid, proc_start(self.proc.pid) or 0))
        for _ in range(3):      # another run may rmdir it meanwhile
            os.makedirs(SERVERS_DIR, 0o755, exist_ok=True)
            try:
                open(self.record, "w").close()
                break
            except FileNotFoundError:
                continue

    def stop(self):
        super().stop()
        try:
            os.unlink(self.record)
            os.rmdir(SERVERS_DIR)       # when the last one
        except (AttributeError, OSError):
            pass


def root_server(env, pki, sendmail, **kw):
    """Write the deployment configuration and start a RootTcpServer (after
    killing those of killed runs)."""
    sweep_servers()
    deployment_conf(env, pki, sendmail, **kw)
    path = env.write_config()
    os.chown(path, 0, 0)
    s = RootTcpServer(env, path)
    env.servers.append(s)
    return s


# --------------------------------------------------------------------------
# clients

def make_message(msgid, headers, body="This is an end-to-end test.\n"):
    """An RFC 5322 message (bytes, CRLF): headers is a list of (name,
    value); a Message-ID and a Date are added first."""
    lines = ["Message-ID: <%s>" % msgid,
             "Date: " + email.utils.formatdate(localtime=False)]
    lines += ["%s: %s" % hv for hv in headers]
    text = "\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")
    return text.encode()


def new_msgid(tag):
    return "%s.%d.%d.%s@e2e.test" % (tag, os.getpid(), time.monotonic_ns(), SFX)


def msgid_re(pid=None):
    """A bytes pattern matching the Message-IDs new_msgid() makes in the run
    with that pid (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return rb"\.%d\.\d+\.%04x@e2e\.test" % (pid, pid & 0xffff)


class Sent:
    """What the client saw: the replies to MAIL, each RCPT and the end of
    data, as (code, text) pairs (None where not reached)."""

    def __init__(self):
        self.mail = None
        self.rcpts = []
        self.data = None

    @property
    def code(self):
        return self.data[0] if self.data else None

    @property
    def text(self):
        return self.data[1] if self.data else ""

    def __repr__(self):
        return "Sent(mail=%r, rcpts=%r, data=%r)" % (self.mail, self.rcpts, self.data)


def smtplib_send(port, user, password, sender, rcpts, message, timeout=60):
    """Python's smtplib: EHLO, STARTTLS, EHLO, AUTH (smtplib's choice of
    mechanism), MAIL, RCPT..., DATA; never raises on a refusal (see Sent)."""
    out = Sent()
    s = smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT_HELO,
                     timeout=timeout)
    try:
        s.ehlo()
        s.starttls(context=smtptest.tls_client_context())
        s.ehlo()
        s.login(user, password)
        out.mail = s.mail(sender)
        if out.mail[0] != 250:
            return out
        for r in rcpts:
            out.rcpts.append(s.rcpt(r))
        if not any(c == 250 for c, _ in out.rcpts):
            return out
        code, text = s.data(message)
        out.data = (code, text.decode(errors="replace") if isinstance(text, bytes)
                    else text)
        return out
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def swaks_send(port, user, password, sender, rcpts, message, auth="PLAIN",
               timeout=60):
    """swaks (a real client, Perl) with STARTTLS and AUTH; message is the
    whole message (bytes).  Returns (Sent, swaks's output); swaks's own
    exit status is not looked at (it is non-zero on any refusal)."""
    import tempfile
    with tempfile.NamedTemporaryFile(prefix="e2e-swaks.", suffix=".eml") as f:
        f.write(message)
        f.flush()
        r = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(port),
             "--helo", CLIENT_HELO, "--tls", "--auth", auth,
             "--auth-user", user, "--auth-password", password,
             "--from", sender, "--to", ",".join(rcpts),
             "--data", "@" + f.name, "--timeout", str(timeout)],
            capture_output=True, timeout=timeout + 30, stdin=subprocess.DEVNULL)
    text = r.stdout.decode(errors="replace")
    out = Sent()
    # swaks marks its own lines " ~> " and the server's "<~  " inside TLS
    # ("<~* " for an error reply).
    state = None
    for line in text.splitlines():
        m = re.match(r"^ ~> (.*)$", line)
        if m:
            c = m.group(1)
            state = ("mail" if c.startswith("MAIL FROM") else
                     "rcpt" if c.startswith("RCPT TO") else
                     "data" if c == "." else None)
            continue
        m = re.match(r"^<~\*? +(\d{3})([ -])(.*)$", line)
        if not m or state is None or m.group(2) == "-":
            continue
        rep = (int(m.group(1)), m.group(3))
        if state == "mail":
            out.mail = rep
        elif state == "rcpt":
            out.rcpts.append(rep)
        else:
            out.data = rep
        state = None
    return out, text + r.stderr.decode(errors="replace")


# --------------------------------------------------------------------------
# mailboxes

def mailbox_path(user):
    """The user's mailbox: ~/Maildir/ when it exists, else /var/mail/USER."""
    home = pwd.getpwnam(user).pw_dir
    md = os.path.join(home, "Maildir")
    if os.path.isdir(os.path.join(md, "new")):
        return md
    return "/var/mail/" + user


def read_mailbox(user):
    """Every message in the user's mailbox, as email.message.EmailMessage
    (mbox: the From_ line is kept as get_from()); [] when there is none."""
    path = mailbox_path(user)
    if os.path.isdir(path):
        box = mailbox.Maildir(path, factory=None, create=False)
    elif os.path.exists(path):
        box = mailbox.mbox(path, create=False)
    else:
        return []
    try:
        return [m for m in box]
    finally:
        box.close()


def with_msgid(msgs, msgid):
    want = "<%s>" % msgid
    return [m for m in msgs if (m.get("Message-ID") or "").strip() == want]


def count(user, msgid):
    return len(with_msgid(read_mailbox(user), msgid))


def wait_delivered(users, msgid, timeout=30):
    """Wait until each user's mailbox holds a message with msgid; returns
    {user: [messages with msgid]} as seen at that moment."""
    def seen():
        got = {u: with_msgid(read_mailbox(u), msgid) for u in users}
        return got if all(got.values()) else None
    try:
        return wait_until(seen, timeout, 0.1, "delivery of <%s> to %s"
                          % (msgid, ", ".join(users)))
    except AssertionError:
        got = {u: len(with_msgid(read_mailbox(u), msgid)) for u in users}
        raise AssertionError("<%s> not delivered within %ss: copies per "
                             "mailbox %r" % (msgid, timeout, got)) from None


def header_values(msg, name):
    return [str(v) for v in (msg.get_all(name) or [])]


def unfold(value):
    return re.sub(r"\r?\n[ \t]+", " ", str(value))


# --------------------------------------------------------------------------
# processes

def processes(exe_basename):
    """(pid, uid, cmdline) of the processes running exe_basename."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
            uid = os.stat("/proc/" + d).st_uid
        except OSError:
            continue
        if argv and os.path.basename(argv[0].decode(errors="replace")) == exe_basename:
            out.append((int(d), uid, b" ".join(argv).decode(errors="replace")))
    return out


def kill_pids(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
