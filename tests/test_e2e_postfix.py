"""End to end with a real Postfix (Debian's postfix package): real Unix
accounts, the installed /etc/pam.d/smtpauthd (pam_unix), smtpauthd run as
root by systemd-socket-activate with STARTTLS, real clients (smtplib,
swaks), Postfix's own /usr/sbin/sendmail run as the authenticated user, and
the messages read back from /var/mail/USER.

Root only, and only where Postfix is installed and not running: the module
configures Postfix with `postconf -e` (local delivery only, no listener),
starts it with `postfix start` and stops it with `postfix stop` at the end,
restoring /etc/postfix/main.cf, and removes its accounts, their
mailboxes, the queue files of its messages and Postfix's log file;
/etc/aliases.db is built by newaliases only when missing or older than
/etc/aliases, and then removed or restored.  Before changing anything it
writes /etc/postfix/main.cf.smtpauthd-e2e (main.cf as it was) and
main.cf.smtpauthd-e2e.run (the run's pid and what it changed, the master
it started): a run killed on the way leaves them, and the next run stops
that master (only that one: its pid and start time recorded), restores
main.cf, maildrop's mode and aliases.db, and removes the killed run's
queue files and log before it starts.

What Postfix does, as the tests find it (Postfix 3.7, Debian 12):
- inject envelope (`sendmail -i -f SENDER -- RCPT...`): the envelope alone
  decides who gets a copy; Postfix's cleanup drops a Bcc: header the
  client left in the message, and the addresses in it get nothing unless
  they were also given in RCPT TO.
- inject headers (`sendmail -i -t -f SENDER`): To/Cc/Bcc decide; a
  recipient given only in RCPT TO gets nothing (though the client got 250
  for it), an address only in a Bcc: header gets a copy, and the Bcc:
  header is removed.
- Postfix adds `Received: by HOST (Postfix, from userid UID)` above
  smtpauthd's header, with the authenticated user's uid; it adds no
  Sender: header and takes any -f sender by default
  (local_login_sender_maps = static:*, authorized_submit_users =
  static:anyone).
- Every refusal by Postfix's sendmail (authorized_submit_users,
  local_login_sender_maps, message_size_limit) exits 75 (EX_TEMPFAIL), so
  the client gets 451 4.3.0, not a 5xx: Postfix's sendmail reports no
  permanent failure.  An unknown local recipient is accepted (exit 0, client 250) and
  bounced later to the envelope sender.
- Postfix stopped: postdrop still writes the message into maildrop (client
  250); it is delivered, once, after `postfix start`.  maildrop not
  writable: postdrop retries forever, smtpauthd kills it at
  sendmail-timeout and answers 451 4.3.0; the client's retry is delivered
  exactly once.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import time

import pytest

import e2e
from e2e import SFX, sh, wait_until
from smtptest import HOSTNAME, QUEUED_RE, DATE_RE, read_log


@pytest.fixture(scope="session", autouse=True)
def _e2e_gate():
    """Every test here skips (fails under SMTPAUTHD_REQUIRE_E2E=1) unless
    root, before any other fixture can skip it."""
    e2e.need_root()


POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
SENDMAIL = "/usr/sbin/sendmail"
MAIN_CF = "/etc/postfix/main.cf"
BACKUP = MAIN_CF + ".smtpauthd-e2e"      # main.cf as it was before the run
RUNFILE = BACKUP + ".run"                 # JSON: the run, what it changed
ALIASES = "/etc/aliases"
ALIASES_DB = ALIASES + ".db"              # alias_database hash:/etc/aliases
ALIASES_BACKUP = ALIASES_DB + ".smtpauthd-e2e"
MASTER_PID = "/var/spool/postfix/pid/master.pid"
SPOOL = "/var/spool/postfix"
MAILDROP = SPOOL + "/maildrop"
QUEUE_DIRS = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt",
              "defer", "bounce", "trace", "flush", "saved")
MYHOSTNAME = "postfix-e2e.test"
MAILLOG = "/var/log/smtpauthd-e2e-postfix.%s.log" % SFX
SENDER_ELSEWHERE = "someone@example.org"
# smtpauthd's replies (relay.c): sendmail's exit 75, and a killed sendmail
BUSY = (451, "4.3.0 Mail system busy, try again later")
TEMPFAIL = (451, "4.3.0 Mail system error, try again later")

ROLES = {"s": "e2eps" + SFX,    # the one who authenticates and sends
         "a": "e2epa" + SFX,    # recipients
         "b": "e2epb" + SFX,
         "c": "e2epc" + SFX}

# The configuration for the tests; whatever the machine had is saved and
# restored.  Everything that could send a copy elsewhere, rewrite an
# address or deliver other than into /var/mail/USER is reset.
SETTINGS = {
    "myhostname": MYHOSTNAME,
    "myorigin": "$myhostname",
    "mydestination": "localhost, $myhostname",
    "inet_interfaces": "loopback-only",
    "master_service_disable": "inet",      # no smtpd on port 25
    "default_transport": "error",           # nothing leaves the host
    "relay_transport": "error",
    "relayhost": "",
    "mail_spool_directory": "/var/mail",
    "home_mailbox": "",
    "mailbox_command": "",
    "mailbox_transport": "",
    "fallback_transport": "",
    "luser_relay": "",
    "alias_maps": "hash:/etc/aliases",
    "alias_database": "hash:/etc/aliases",
    "canonical_maps": "",
    "sender_canonical_maps": "",
    "recipient_canonical_maps": "",
    "virtual_alias_maps": "",
    "always_bcc": "",
    "sender_bcc_maps": "",
    "recipient_bcc_maps": "",
    "header_checks": "",
    "authorized_submit_users": "static:anyone",
    "local_login_sender_maps": "static:*",
    "biff": "no",
    "maillog_file": MAILLOG,
}


def addr(role):
    return ROLES[role] + "@localhost"


def postfix_running():
    return subprocess.run([POSTFIX, "status"], capture_output=True,
                          timeout=30).returncode == 0


def queue_files():
    out = set()
    for d in QUEUE_DIRS:
        for root, _, files in os.walk(os.path.join(SPOOL, d)):
            out.update(os.path.join(root, f) for f in files)
    return out


def is_run_queue_file(path, run):
    """Whether the queue file path belongs to the run (a RUNFILE dict):
    a maildrop file owned by one of the run's accounts (postdrop writes
    them as the submitting user, complete or not), or a queue file whose
    content names one of the run's Message-IDs (e2e.new_msgid of its pid)
    or one of its accounts (a recipient, or the bounce's recipient)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return False
        if path.startswith(MAILDROP + "/") and st.st_uid in run.get("uids", ()):
            return True
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    names = [re.escape(n.encode()) for n in run.get("names", ())]
    pat = e2e.msgid_re(run["pid"])
    if names:
        pat += rb"|" + rb"|".join(names)
    return re.search(pat, data) is not None


def master_token():
    """The running master's run token (pid:start), from master.pid."""
    try:
        with open(MASTER_PID) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    start = e2e.proc_start(pid)
    return None if start is None else "%d-%d" % (pid, start)


def read_run():
    try:
        with open(RUNFILE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}       # torn: treated as a dead run's


def write_run(run):
    tmp = RUNFILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(run, f)
    os.rename(tmp, RUNFILE)


def remove_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def postfix_lock():
    """/etc/postfix flock()ed: two runs starting at once do not both take
    Postfix over."""
    fd = os.open(os.path.dirname(MAIN_CF), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def undo_run(run, baseline=None):
    """Puts back what the run (RUNFILE dict, {} when unknown) changed,
    Postfix stopped: main.cf from BACKUP, maildrop's mode, aliases.db; and
    removes its queue files (those new since baseline only, when given) and
    its log file; RUNFILE last."""
    if os.path.exists(BACKUP):
        os.replace(BACKUP, MAIN_CF)     # a copy2: bytes, owner, mode, times
    if run.get("maildrop_mode") is not None:
        os.chmod(MAILDROP, run["maildrop_mode"])
    if "pid" in run:
        files = queue_files()
        if baseline is not None:
            files -= baseline
        for p in sorted(files):
            if is_run_queue_file(p, run):
                remove_quietly(p)
    if run.get("maillog", "").startswith("/var/log/smtpauthd-e2e-postfix."):
        remove_quietly(run["maillog"])
    if run.get("aliases") == "created":
        remove_quietly(ALIASES_DB)
    elif run.get("aliases") == "backed-up" and os.path.exists(ALIASES_BACKUP):
        os.replace(ALIASES_BACKUP, ALIASES_DB)
    remove_quietly(RUNFILE)


def started_by(run):
    """Whether the running master is the one the (dead) run started: the
    pid and start time it recorded; or, killed while `postfix start` ran
    ("starting"), a master started after the run began, with the run's
    configuration (its maillog_file) still in main.cf."""
    master = master_token()
    if master is None or not run.get("master"):
        return False
    if master == run["master"]:
        return True
    if run["master"] != "starting":
        return False
    try:
        begun = int(run["run"].split("-")[1])
    except (KeyError, IndexError, ValueError):
        return False
    if int(master.split("-")[1]) < begun:
        return False
    r = subprocess.run([POSTCONF, "-h", "maillog_file"], capture_output=True,
                       timeout=30)
    return r.returncode == 0 and r.stdout.decode().strip() == run.get("maillog")


def recover():
    """What a killed run left (RUNFILE, BACKUP): its master stopped when it
    is the very process that run started (started_by), then undo_run.
    Skips when that run is still going, or when a Postfix it did not start
    is running."""
    run = read_run()
    if run is None and not os.path.exists(BACKUP):
        return
    run = run or {}
    if e2e.alive(run.get("run", "")):
        e2e.skip("another run (pid %d) is using Postfix for its end-to-end "
                 "tests" % e2e.pid_of(run["run"]))
    if postfix_running() and started_by(run):
        sh(POSTFIX, "stop", ok=None)
        wait_until(lambda: not postfix_running(), 30, 0.1,
                   "the killed run's Postfix to stop")
    if postfix_running():
        e2e.skip("Postfix is running, and %s is a killed run's backup: "
                 "neither is touched" % BACKUP)
    undo_run(run)


class Postfix:
    def __init__(self, accounts, baseline, run):
        self.accounts = accounts
        self.baseline = baseline        # queue files there before us
        self.run = run                  # what RUNFILE holds
        self.before = set()             # queue files as the test began

    @staticmethod
    def postconf(*settings):
        sh(POSTCONF, "-e", *settings)

    def start(self):
        # The master, so that a later run can stop it should this one be
        # killed (and no other master): "starting" until it is known.
        self.run["master"] = "starting"
        write_run(self.run)
        sh(POSTFIX, "start")
        wait_until(postfix_running, 30, 0.1, "postfix start")
        self.run["master"] = master_token()
        write_run(self.run)

    def stop(self):
        sh(POSTFIX, "stop", ok=None)
        wait_until(lambda: not postfix_running(), 30, 0.1, "postfix stop")

    def new_queue_files(self, incomplete=True, since=None):
        """The queue files made since the module began (since=None) or
        since the set of names since, taken by queue_files(): a test
        counts the files made while it ran, so that a file another test
        left cannot fail it.  incomplete=False leaves out maildrop files
        that are not owner-executable (a postdrop still writing, or one
        that gave up: pickup ignores them)."""
        out = []
        for p in sorted(queue_files() - self.baseline - (since or set())):
            if not incomplete and p.startswith(MAILDROP + "/"):
                try:
                    if not os.stat(p).st_mode & stat.S_IXUSR:
                        continue
                except FileNotFoundError:
                    continue
            out.append(p)
        return out

    def made(self):
        """The queue files made since the test began (pf fixture)."""
        return self.new_queue_files(since=self.before)

    def settle(self, timeout=30):
        """Wait until every message we made has left the queue (delivered
        or bounced): no new file in maildrop, incoming, active,
        deferred..."""
        try:
            wait_until(lambda: not self.new_queue_files(False), timeout, 0.1,
                       "Postfix's queue to empty")
        except AssertionError:
            raise AssertionError("Postfix's queue still holds %r; its log:\n%s"
                                 % (self.new_queue_files(), self.log()[-3000:])) from None

    def log(self):
        return read_log(MAILLOG)

    def mailbox(self, role):
        return e2e.read_mailbox(self.accounts.name(role))


@pytest.fixture(scope="module")
def postfix():
    e2e.need_root(POSTFIX, POSTCONF, SENDMAIL, "newaliases", "postsuper")
    r = subprocess.run(["dpkg-query", "-S", SENDMAIL], capture_output=True)
    if r.returncode == 0 and not r.stdout.startswith(b"postfix:"):
        e2e.skip("%s is not Postfix's: %s" % (SENDMAIL, r.stdout.decode().strip()))
    accounts = e2e.Accounts(ROLES)
    pam = e2e.InstalledPam()
    run = {"run": e2e.me(), "pid": os.getpid(), "maillog": MAILLOG,
           "names": sorted(ROLES.values()) + ["e2epnosuch" + SFX],
           "uids": [], "maildrop_mode": None, "aliases": None, "master": None}
    pf = None
    try:
        with postfix_lock():
            recover()
            if postfix_running():
                e2e.skip("Postfix is running: the end-to-end tests do not "
                         "reconfigure a live MTA")
            # From here on, RUNFILE and BACKUP tell a later run what to undo
            # should this one be killed (all read after recover()).
            run["maildrop_mode"] = stat.S_IMODE(os.stat(MAILDROP).st_mode)
            pf = Postfix(accounts, queue_files(), run)
            write_run(run)
            shutil.copy2(MAIN_CF, BACKUP + ".tmp")
            st = os.stat(MAIN_CF)
            os.chown(BACKUP + ".tmp", st.st_uid, st.st_gid)
            os.rename(BACKUP + ".tmp", BACKUP)
            accounts.create()
            run["uids"] = [accounts.uid(r) for r in ROLES]
            write_run(run)
            pam.acquire()
            # newaliases only when aliases.db is missing or out of date:
            # then removed, or the old one put back, at the end.
            if not os.path.exists(ALIASES_DB):
                run["aliases"] = "created"
            elif os.stat(ALIASES_DB).st_mtime < os.stat(ALIASES).st_mtime:
                run["aliases"] = "backed-up"
            if run["aliases"]:
                write_run(run)
                if run["aliases"] == "backed-up":
                    shutil.copy2(ALIASES_DB, ALIASES_BACKUP + ".tmp")
                    os.rename(ALIASES_BACKUP + ".tmp", ALIASES_BACKUP)
                sh("newaliases")
            pf.postconf(*("%s = %s" % kv for kv in SETTINGS.items()))
            pf.start()
        yield pf
    finally:
        if pf is not None:
            if postfix_running():
                try:
                    pf.stop()
                except AssertionError:
                    pass
            undo_run(run, pf.baseline)
        pam.release()
        accounts.remove()


@pytest.fixture
def pf(postfix):
    """The running Postfix, its queue empty of our messages before and
    after each test.  pf.before: the queue files when the test began (what
    pf.made() compares against).  A refused postdrop's incomplete maildrop
    file that a test left (it failed before removing it) is removed after
    it, so that it is not the next test's."""
    if not postfix_running():
        postfix.start()
    postfix.settle()
    postfix.before = queue_files()
    yield postfix
    complete = set(postfix.new_queue_files(False, since=postfix.before))
    for p in postfix.new_queue_files(since=postfix.before):
        if p.startswith(MAILDROP + "/") and p not in complete and \
                is_run_queue_file(p, postfix.run):
            remove_quietly(p)
    if not postfix_running():
        postfix.start()
    postfix.settle()


def server(env, pki, **kw):
    return e2e.root_server(env, pki, SENDMAIL, **kw)


def send(srv, pf, sender, rcpts, message, client="smtplib", role="s"):
    user, pw = pf.accounts.name(role), pf.accounts.password(role)
    if client == "smtplib":
        return e2e.smtplib_send(srv.port, user, pw, sender, rcpts, message)
    sent, out = e2e.swaks_send(srv.port, user, pw, sender, rcpts, message)
    assert sent.data is not None, "swaks did not get to the end of data:\n" + out
    return sent


def queued_id(sent):
    assert sent.code == 250, sent
    m = re.match(r"^2\.0\.0 (.*)$", sent.text)
    assert m, sent
    q = QUEUED_RE.match(m.group(1))
    assert q, sent
    return q.group(1)


def exactly_once(pf, roles, msgid):
    """Each role's mailbox holds exactly one copy of msgid (after the queue
    has emptied, so that no late duplicate is missed); {role: message}."""
    e2e.wait_delivered([pf.accounts.name(r) for r in roles], msgid)
    pf.settle()
    out = {}
    for r in roles:
        copies = e2e.with_msgid(pf.mailbox(r), msgid)
        assert len(copies) == 1, "%s has %d copies of <%s>" % (
            pf.accounts.name(r), len(copies), msgid)
        out[r] = copies[0]
    return out


def none_for(pf, roles, msgid):
    pf.settle()
    for r in roles:
        n = len(e2e.with_msgid(pf.mailbox(r), msgid))
        assert n == 0, "%s got %d copies of <%s>" % (pf.accounts.name(r), n, msgid)


def smtpauthd_received_re(user, rcpt=None):
    """smtpauthd's Received: header as it arrives (unfolded), over TLS."""
    r = (r"^from %s \(\[127\.0\.0\.1\]\) by %s \(smtpauthd\) with ESMTPSA "
         r"id (?P<id>[0-9A-F]{16}) \(using (?P<tls>TLSv1\.[23]) with cipher "
         r"[A-Za-z0-9_-]+\) \(authenticated user %s\)"
         % (re.escape(e2e.CLIENT_HELO), re.escape(HOSTNAME), re.escape(user)))
    if rcpt:
        r += r" for <%s>" % re.escape(rcpt)
    return re.compile(r + r"; %s$" % DATE_RE)


def postfix_received_re(uid):
    return re.compile(r"^by %s \(Postfix, from userid %d\) id [0-9A-Z]+; %s$"
                      % (re.escape(MYHOSTNAME), uid, DATE_RE))


def check_trace(pf, msg, user_role, envelope_sender, qid, rcpt=None):
    """The headers every delivered copy carries: Return-Path is the
    client's MAIL FROM; two Received: headers, Postfix's on top naming the
    authenticated user's uid, smtpauthd's below it; no Sender:."""
    rp = e2e.header_values(msg, "Return-Path")
    assert rp == ["<%s>" % envelope_sender], rp
    assert msg.get_from().split()[0] == envelope_sender, msg.get_from()
    rec = [e2e.unfold(v).strip() for v in e2e.header_values(msg, "Received")]
    assert len(rec) == 2, rec
    assert postfix_received_re(pf.accounts.uid(user_role)).match(rec[0]), rec
    m = smtpauthd_received_re(pf.accounts.name(user_role), rcpt).match(rec[1])
    assert m, rec
    assert m.group("id") == qid, (qid, rec)
    assert "Sender" not in msg, msg["Sender"]


# --------------------------------------------------------------------------
# 1. the message: two To recipients and a Bcc given only in RCPT TO

def test_two_to_and_rcpt_only_bcc(env, pki, pf):
    srv = server(env, pki)
    msgid = e2e.new_msgid("main")
    message = e2e.make_message(msgid, [
        ("From", "Someone <%s>" % SENDER_ELSEWHERE),
        ("To", "%s, %s" % (addr("a"), addr("b"))),
        ("Subject", "two To and a Bcc")])
    sent = send(srv, pf, SENDER_ELSEWHERE, [addr("a"), addr("b"), addr("c")],
                message)
    assert sent.mail[0] == 250 and [c for c, _ in sent.rcpts] == [250] * 3, sent
    qid = queued_id(sent)
    got = exactly_once(pf, "abc", msgid)
    for r, msg in got.items():
        assert "Bcc" not in msg, (r, msg["Bcc"])
        assert e2e.header_values(msg, "Delivered-To") == [addr(r)], r
        assert e2e.header_values(msg, "To") == ["%s, %s" % (addr("a"), addr("b"))]
        assert msg.get_payload() == "This is an end-to-end test.\n", msg.get_payload()
        check_trace(pf, msg, "s", SENDER_ELSEWHERE, qid)
    # Postfix's pickup names the submitting uid and the envelope sender.
    assert re.search(r"postfix/pickup\[\d+\]: \w+: uid=%d from=<%s>"
                     % (pf.accounts.uid("s"), re.escape(SENDER_ELSEWHERE)),
                     pf.log()), pf.log()[-2000:]


def test_own_address_one_rcpt_swaks(env, pki, pf):
    """swaks, AUTH LOGIN; the envelope sender is the user's own address and
    the one recipient is named in smtpauthd's Received: (for <...>)."""
    srv = server(env, pki)
    msgid = e2e.new_msgid("swaks")
    message = e2e.make_message(msgid, [("From", addr("s")), ("To", addr("a")),
                                       ("Subject", "from swaks")])
    sent = send(srv, pf, addr("s"), [addr("a")], message, client="swaks")
    qid = queued_id(sent)
    msg = exactly_once(pf, "a", msgid)["a"]
    check_trace(pf, msg, "s", addr("s"), qid, rcpt=addr("a"))
    none_for(pf, "bcs", msgid)


def test_bcc_header_from_client_envelope(env, pki, pf):
    """inject envelope, the client left a Bcc: header in the message:
    Postfix removes it; the envelope alone decides (c, in RCPT TO and the
    Bcc: header, gets a copy; b, only in the header, gets none)."""
    srv = server(env, pki)
    msgid = e2e.new_msgid("bcchdr")
    message = e2e.make_message(msgid, [
        ("From", addr("s")), ("To", addr("a")),
        ("Bcc", "%s, %s" % (addr("c"), addr("b"))),
        ("Subject", "Bcc header, envelope mode")])
    sent = send(srv, pf, addr("s"), [addr("a"), addr("c")], message)
    qid = queued_id(sent)
    got = exactly_once(pf, "ac", msgid)
    for r, msg in got.items():
        assert "Bcc" not in msg, (r, msg["Bcc"])
        check_trace(pf, msg, "s", addr("s"), qid)
    none_for(pf, "bs", msgid)


# --------------------------------------------------------------------------
# 2. inject headers

def test_inject_headers(env, pki, pf):
    """inject headers (sendmail -t): the headers decide.  a (To and RCPT)
    gets a copy; b (only in a Bcc: header) gets one, without the Bcc:
    header; c, a Bcc given only in RCPT TO, is lost although the client
    was told 250 for it."""
    srv = server(env, pki, inject="headers")
    msgid = e2e.new_msgid("headers")
    message = e2e.make_message(msgid, [
        ("From", addr("s")), ("To", addr("a")), ("Bcc", addr("b")),
        ("Subject", "inject headers")])
    sent = send(srv, pf, SENDER_ELSEWHERE, [addr("a"), addr("c")], message)
    assert [c for c, _ in sent.rcpts] == [250, 250], sent
    qid = queued_id(sent)
    got = exactly_once(pf, "ab", msgid)
    for r, msg in got.items():
        assert "Bcc" not in msg, (r, msg["Bcc"])
        check_trace(pf, msg, "s", SENDER_ELSEWHERE, qid)
    none_for(pf, "cs", msgid)


# --------------------------------------------------------------------------
# 3. sendmail runs as the authenticated user: Postfix's rules for it

def test_postfix_defaults_let_users_choose_sender():
    """What an operator gets by default: anyone may submit, with any -f."""
    if not os.access(POSTCONF, os.X_OK):
        e2e.skip("Postfix not installed")
    d = sh(POSTCONF, "-d", "-h", "authorized_submit_users",
           "local_login_sender_maps").stdout.decode().split("\n")
    assert d[:2] == ["static:anyone", "static:*"], d


def test_authorized_submit_users_refuses(env, pki, pf):
    """authorized_submit_users = !USER, static:anyone: Postfix's sendmail
    refuses the user with exit 75 (EX_TEMPFAIL, not EX_NOPERM), so the
    client gets 451 4.3.0; nothing is queued or delivered."""
    srv = server(env, pki)
    msgid = e2e.new_msgid("unauthorized")
    message = e2e.make_message(msgid, [("From", addr("s")), ("To", addr("a")),
                                       ("Subject", "not allowed")])
    pf.postconf("authorized_submit_users = !%s, static:anyone" % ROLES["s"])
    try:
        sent = send(srv, pf, addr("s"), [addr("a")], message)
    finally:
        pf.postconf("authorized_submit_users = static:anyone")
    assert sent.data == BUSY, sent
    assert re.search(r"User %s\(%d\) is not allowed to submit mail"
                     % (ROLES["s"], pf.accounts.uid("s")), srv.log), srv.log
    assert re.search(r"exit status 75\b", srv.log), srv.log
    none_for(pf, "abcs", msgid)


def test_local_login_sender_maps(env, pki, pf):
    """local_login_sender_maps restricts the -f a login may give (Postfix
    3.6+; what an operator sets to stop users forging the envelope
    sender): a foreign sender is refused, again with exit 75 and so
    451 4.3.0, and nothing delivered; the allowed one passes."""
    srv = server(env, pki)
    pf.postconf("local_login_sender_maps = inline:{ { %s = %s } }, static:*"
                % (ROLES["s"], addr("s")))
    try:
        bad = e2e.new_msgid("forged")
        sent = send(srv, pf, SENDER_ELSEWHERE, [addr("a")], e2e.make_message(
            bad, [("From", SENDER_ELSEWHERE), ("To", addr("a")),
                  ("Subject", "forged sender")]))
        assert sent.data == BUSY, sent
        # (smtpauthd's log escapes "=" in what sendmail wrote as \x3d)
        assert re.search(r"sendmail: fatal: %s\(%d\): not authorized to use "
                         r"sender(=|\\x3d)'%s'" % (
                             re.escape(SENDER_ELSEWHERE), pf.accounts.uid("s"),
                             re.escape(SENDER_ELSEWHERE)), srv.log), srv.log
        good = e2e.new_msgid("own")
        sent2 = send(srv, pf, addr("s"), [addr("a")], e2e.make_message(
            good, [("From", addr("s")), ("To", addr("a")),
                   ("Subject", "own sender")]))
        qid = queued_id(sent2)
    finally:
        pf.postconf("local_login_sender_maps = static:*")
    msg = exactly_once(pf, "a", good)["a"]
    check_trace(pf, msg, "s", addr("s"), qid, rcpt=addr("a"))
    # The refused submission left an incomplete (not owner-executable)
    # file in maildrop, which pickup ignores: not a message.
    leftovers = [p for p in pf.made() if p.startswith(MAILDROP + "/")]
    for p in leftovers:
        st = os.stat(p)
        assert st.st_uid == pf.accounts.uid("s"), (p, st)
        assert not st.st_mode & stat.S_IXUSR, (p, oct(st.st_mode))
        os.unlink(p)
    none_for(pf, "abcs", bad)


def test_message_size_limit(env, pki, pf):
    """A message over Postfix's message_size_limit (default 10240000,
    below smtpauthd's max-message-size default of 36700160) is refused by
    Postfix's sendmail with exit 75 too: the client gets 451 4.3.0 and
    would retry it in vain.  The operator sets max-message-size to at most
    message_size_limit so that smtpauthd refuses it itself, with a 552."""
    srv = server(env, pki)
    msgid = e2e.new_msgid("big")
    message = e2e.make_message(msgid, [("From", addr("s")), ("To", addr("a")),
                                       ("Subject", "too big for Postfix")],
                               body=("x" * 70 + "\n") * 100)
    pf.postconf("message_size_limit = 4000")
    try:
        sent = send(srv, pf, addr("s"), [addr("a")], message)
    finally:
        pf.postconf("message_size_limit = %s" % sh(
            POSTCONF, "-d", "-h", "message_size_limit").stdout.decode().strip())
    assert sent.data == BUSY, sent
    assert re.search(r"sendmail: fatal: %s\(%d\): message file too big"
                     % (re.escape(addr("s")), pf.accounts.uid("s")), srv.log), srv.log
    assert pf.made() == [], pf.made()
    none_for(pf, "as", msgid)


# --------------------------------------------------------------------------
# 4. an unknown local user

def test_unknown_local_user(env, pki, pf):
    """Postfix's sendmail does not look recipients up: it accepts (exit 0,
    the client 250 for the whole message) and Postfix bounces later to the
    envelope sender, here the user's own mailbox.  A synchronous 5xx for
    an unknown user cannot come from Postfix's sendmail."""
    srv = server(env, pki)
    msgid = e2e.new_msgid("nouser")
    nosuch = "e2epnosuch%s@localhost" % SFX
    message = e2e.make_message(msgid, [("From", addr("s")),
                                       ("To", "%s, %s" % (addr("a"), nosuch)),
                                       ("Subject", "one unknown")])
    sent = send(srv, pf, addr("s"), [addr("a"), nosuch], message,
                client="swaks")
    assert [c for c, _ in sent.rcpts] == [250, 250], sent
    queued_id(sent)
    exactly_once(pf, "a", msgid)
    bounces = wait_until(lambda: [m for m in pf.mailbox("s")
                                  if msgid in m.as_string()], 30, 0.1,
                         "the bounce in the sender's mailbox")
    pf.settle()
    bounces = [m for m in pf.mailbox("s") if msgid in m.as_string()]
    assert len(bounces) == 1, bounces
    b = bounces[0]
    assert e2e.header_values(b, "Return-Path") == ["<>"], b["Return-Path"]
    assert b.get_content_type() == "multipart/report", b.get_content_type()
    text = b.as_string()
    assert nosuch in text and "unknown user" in text, text[:3000]
    assert re.search(r"Status: 5\.1\.1", text), text[:3000]


# --------------------------------------------------------------------------
# 5. the MTA stopped, the queue not writable

def test_postfix_stopped(env, pki, pf):
    """postfix stop: postdrop still writes the message into maildrop, so
    the client gets 250; the complete file, the submitting user's, waits
    there untouched while Postfix is stopped; after postfix start pickup
    takes it and it is delivered exactly once."""
    srv = server(env, pki)
    msgid = e2e.new_msgid("stopped")
    message = e2e.make_message(msgid, [("From", addr("s")), ("To", addr("a")),
                                       ("Subject", "while stopped")])
    pf.stop()
    try:
        sent = send(srv, pf, addr("s"), [addr("a"), addr("b")], message)
        queued_id(sent)
        dropped = [p for p in pf.made() if p.startswith(MAILDROP + "/")]
        assert len(dropped) == 1, dropped
        # Just before the start: still stopped, the file still in maildrop
        # (complete: owner-executable; written by the user), in no mailbox.
        assert not postfix_running()
        st = os.stat(dropped[0])
        assert st.st_uid == pf.accounts.uid("s") and st.st_mode & stat.S_IXUSR, \
            (dropped, st)
        assert is_run_queue_file(dropped[0], {"pid": os.getpid()}), dropped
        assert [e2e.count(ROLES[r], msgid) for r in "ab"] == [0, 0]
    finally:
        pf.start()
    exactly_once(pf, "ab", msgid)
    assert not os.path.exists(dropped[0]), dropped


def test_maildrop_not_writable(env, pki, pf):
    """maildrop not writable: postdrop retries for ever, smtpauthd kills it
    (its process group) at sendmail-timeout and answers 451 4.3.0; nothing
    is left running or queued.  The client retries the same message once
    maildrop is back: one copy each, no duplicate."""
    timeout = 3
    srv = server(env, pki, sendmail_timeout=timeout)
    msgid = e2e.new_msgid("maildrop")
    message = e2e.make_message(msgid, [("From", addr("s")),
                                       ("To", "%s, %s" % (addr("a"), addr("b"))),
                                       ("Subject", "retried")])
    rcpts = [addr("a"), addr("b")]
    mode = stat.S_IMODE(os.stat(MAILDROP).st_mode)
    os.chmod(MAILDROP, 0)
    try:
        t = time.monotonic()
        sent = send(srv, pf, addr("s"), rcpts, message)
        took = time.monotonic() - t
    finally:
        os.chmod(MAILDROP, mode)
    assert sent.data == TEMPFAIL, sent
    assert took >= timeout - 0.5, took
    assert "killed after sendmail-timeout" in srv.log, srv.log
    assert "mail_queue_enter: create file maildrop/" in srv.log, srv.log
    uid = pf.accounts.uid("s")
    left = [p for p in e2e.processes("postdrop") + e2e.processes("sendmail")
            if p[1] == uid]
    e2e.kill_pids([p[0] for p in left])
    assert left == [], left
    assert pf.made() == [], pf.made()
    none_for(pf, "ab", msgid)
    sent = send(srv, pf, addr("s"), rcpts, message)
    qid = queued_id(sent)
    got = exactly_once(pf, "ab", msgid)
    for msg in got.values():
        check_trace(pf, msg, "s", addr("s"), qid)
