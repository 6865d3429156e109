"""The manual pages, man/smtpauthd.8, man/smtpauthd.conf.5 and
man/smtpauthd-setup.7 (the how-tos smtpauthd.8 points to): all must be
clean under mandoc's and groff's checkers, and must describe what the
program really has: every configuration key with its default (as
`smtpauthd -T -f /dev/null` prints it), every command-line option (from the
getopt string in smtpauthd.c), and every log line (from the log_msg calls
in the source).

mandoc runs at -W style, its strictest level, rather than -W warning: the
pages are clean at that level (no STYLE messages either), and keeping them
so costs nothing, while a STYLE message (a typo'd macro argument, a
section out of place, trailing blanks) is usually a real mistake.  Any
output, or a nonzero exit, fails.

groff runs as the issue asks (`groff -ww -z -man`) and once more with -t,
since the pages have tables and tbl has its own diagnostics; any output on
standard error fails.

mandoc and groff missing is the only reason to skip (Debian: mandoc,
groff-base).
"""

import os
import re
import shutil
import subprocess

import pytest

import smtptest

MAN = os.path.join(smtptest.REPO, "man")
PAGE8 = os.path.join(MAN, "smtpauthd.8")
PAGE5 = os.path.join(MAN, "smtpauthd.conf.5")
PAGE7 = os.path.join(MAN, "smtpauthd-setup.7")
PAGES = [PAGE8, PAGE5, PAGE7]
C_ENV = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed (Debian: %s)" %
                    (tool, "mandoc" if tool == "mandoc" else "groff-base"))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def section(source, name):
    """The source of section NAME (.SH NAME) of a page, up to the next .SH."""
    m = re.search(r"^\.SH %s\n(.*?)(?=^\.SH |\Z)" % re.escape(name), source,
                  re.M | re.S)
    assert m, "no section %s" % name
    return m.group(1)


def plain(source):
    """roff source as text, near enough for looking up words: escapes
    undone, font changes and macro names dropped."""
    text = []
    for line in source.split("\n"):
        if line.startswith('.\\"'):
            continue
        if line.startswith("."):
            line = re.sub(r"^\.[A-Za-z]+\s*", "", line)
            line = line.replace('"', "")
        text.append(line)
    s = " ".join(text)
    s = re.sub(r"\\f[BIRP]", "", s)
    s = s.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")
    s = s.replace("\\|", "").replace("\\ ", " ").replace("\\c", "")
    s = s.replace("\\(lq", '"').replace("\\(rq", '"').replace("\\(aq", "'")
    return re.sub(r"\s+", " ", s)


def render(path):
    """The page as mandoc formats it, without overstrike, on wide lines;
    section headings start their lines, all else is indented."""
    out = subprocess.run(["mandoc", "-Tascii", "-Owidth=1000", path],
                         capture_output=True, env=C_ENV, check=True).stdout
    return re.sub(r".\x08", "", out.decode("utf-8", "replace"))


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_mandoc_lint_clean(page):
    need("mandoc")
    r = subprocess.run(["mandoc", "-Tlint", "-W", "style", page],
                       capture_output=True, env=C_ENV)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0 and out == "", \
        "mandoc -Tlint -W style %s (exit %d):\n%s" % (page, r.returncode, out)


@pytest.mark.parametrize("tbl", [[], ["-t"]], ids=["plain", "tbl"])
@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_groff_clean(page, tbl):
    need("groff")
    cmd = ["groff"] + tbl + ["-ww", "-z", "-man", page]
    r = subprocess.run(cmd, capture_output=True, env=C_ENV)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0 and err == "", \
        "%s (exit %d):\n%s" % (" ".join(cmd), r.returncode, err)


def effective_defaults():
    r = subprocess.run([smtptest.BINARY, "-T", "-f", "/dev/null"],
                       capture_output=True, check=True)
    pairs = []
    for line in r.stdout.decode().splitlines():
        key, _, value = line.partition(" ")
        pairs.append((key, value))
    assert len(pairs) >= 20, "smtpauthd -T printed too little:\n%s" % r.stdout
    return pairs


def key_entries():
    """{key: plain text of its entry} from the KEYS section of
    smtpauthd.conf.5, each entry a .TP whose tag begins with the key."""
    entries = {}
    for chunk in ("\n" + section(read(PAGE5), "KEYS")).split("\n.TP\n")[1:]:
        tag, _, body = chunk.partition("\n")
        key = plain(tag).split()[0]
        assert key not in entries, "key %s described twice" % key
        entries[key] = plain(body)
    return entries


def test_every_key_documented_with_its_default():
    entries = key_entries()
    for key, value in effective_defaults():
        assert key in entries, "key %s is not in smtpauthd.conf(5)" % key
        text = entries[key]
        assert re.search(r"\bdefault\b", text, re.I), \
            "%s: its entry does not give its default" % key
        if key == "hostname":
            # Host-dependent: -T prints this host's name.
            assert "fully qualified domain name" in text, text
        elif value == "":
            assert re.search(r"\bunset\b", text, re.I), \
                "%s: unset by default, and its entry does not say so" % key
        else:
            assert re.search(r"(?<![\w.-])%s(?![\w-])" % re.escape(value),
                             text), \
                "%s: the default %r is not in its entry:\n%s" % (key, value,
                                                                 text)


def test_no_key_documented_that_does_not_exist():
    keys = {k for k, _ in effective_defaults()}
    extra = set(key_entries()) - keys
    assert not extra, "smtpauthd.conf(5) describes unknown keys %s" % extra


def test_defaults_example_is_what_smtpauthd_prints():
    """The EXAMPLES block of smtpauthd.conf(5) that claims to be the output
    of `smtpauthd -T -f /dev/null` is exactly that, but for the host name."""
    ex = section(read(PAGE5), "EXAMPLES")
    m = re.search(r"smtpauthd \\-T \\-f /dev/null\n.*?\.EX\n(.*?)\n\.EE", ex,
                  re.S)
    assert m, "no -T example in smtpauthd.conf(5)"
    documented = [line.replace("\\-", "-") for line in m.group(1).split("\n")]
    expected = ["%s %s" % (k, "mail.example.org" if k == "hostname" else v)
                for k, v in effective_defaults()]
    expected = [line.rstrip() for line in expected]
    assert documented == expected


def getopt_letters():
    src = read(os.path.join(smtptest.REPO, "smtpauthd.c"))
    m = re.search(r'getopt\(argc, argv, "([^"]+)"\)', src)
    assert m, "no getopt call in smtpauthd.c"
    letters = m.group(1).replace(":", "")
    assert len(letters) >= 5, letters
    return letters


def test_every_option_documented():
    src = read(PAGE8)
    options = section(src, "OPTIONS")
    synopsis = plain(section(src, "SYNOPSIS"))
    for ch in getopt_letters():
        assert re.search(r"^\.(B|BI|BR) \\-%s\b" % ch, options, re.M), \
            "option -%s has no entry under OPTIONS in smtpauthd(8)" % ch
        assert re.search(r"-\w*%s" % ch, synopsis), \
            "option -%s is not in the SYNOPSIS of smtpauthd(8)" % ch


def log_formats():
    """The constant text that begins each log_msg format in the source."""
    formats = []
    for name in sorted(os.listdir(smtptest.REPO)):
        if not name.endswith(".c"):
            continue
        src = read(os.path.join(smtptest.REPO, name))
        for m in re.finditer(r"\blog_msg\(\s*LOG_[A-Z]+,\s*((?:\"(?:[^\"\\]|"
                             r"\\.)*\"\s*)+)", src):
            fmt = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
            formats.append((name, fmt))
    assert len(formats) >= 30, formats
    return formats


def test_every_log_line_documented():
    """Every line the program logs is in LOG MESSAGES (or, for those that
    end a connection's set-up, named there), at least up to its first
    variable field."""
    need("mandoc")
    text = render(PAGE8)
    start = text.index("\nLOG MESSAGES\n")
    logs = text[start:text.index("\nENVIRONMENT\n", start)]
    logs = re.sub(r"\s+", " ", logs)
    missing = []
    for name, fmt in log_formats():
        # Up to the first field, its trailing blank kept ("unlink " is not
        # "unlinked"), at the start of a word.
        fixed = fmt.split("%")[0].replace('\\"', '"').lstrip()
        if fixed == "":
            continue        # "%s": the password file's problems, which
            #                 begin "passwd-file %s", also logged so
        if not re.search(r"(?<![\w-])" + re.escape(fixed), logs):
            missing.append("%s: %r" % (name, fixed))
    assert not missing, "log lines not in LOG MESSAGES:\n" + "\n".join(missing)


def test_fail2ban_filter_in_page_matches_a_real_line(tmp_path):
    """The failregex the page gives is the shipped filter's
    (contrib/fail2ban), matches the auth failed line the real binary
    writes for a wrong login, and takes the client's address from its ip=
    field; it does not match the line for a password check that could not
    be made (reason=unavailable: banning users while LDAP is down), nor
    the same for a check that timed out, nor a right password of a refused
    account, nor a PAM line that quotes an auth failed line
    (test_fail2ban.py runs fail2ban itself)."""
    src = read(PAGE8)
    m = re.search(r"^failregex = (.*)$", src, re.M)
    assert m, "no failregex in smtpauthd(8)"
    regex = m.group(1).replace("\\e", "\\").replace("\\-", "-")
    with open(os.path.join(smtptest.REPO, "contrib", "fail2ban", "filter.d",
                           "smtpauthd.conf")) as f:
        shipped = re.search(r"^failregex = (.*)$", f.read(), re.M).group(1)
    assert regex == shipped, (regex, shipped)
    assert regex.startswith("^%(__prefix_line)s") and regex.endswith("$")
    regex = "^" + regex[len("^%(__prefix_line)s"):].replace(
        "<ADDR>", r"(?P<host>\S+)")
    passwd = tmp_path / "passwd"        # no alice in it
    passwd.write_text("bob:$6$salt$hash\n")
    os.chmod(passwd, 0o600)

    def failed_line(passwd_file):
        env = dict(os.environ, REMOTE_ADDR="192.0.2.77")
        auth = "AGFsaWNlAHdyb25n"          # \0alice\0wrong
        r = subprocess.run(
            [smtptest.BINARY, "-d", "-f", "/dev/null", "-o", "auth=file",
             "-o", "passwd-file=" + passwd_file, "-o",
             "auth-require-tls=no", "-o", "auth-failure-delay=0",
             # as root the session needs an existing account, as in smtptest
             "-o", "privsep-user=nobody"],
            input=("EHLO x\r\nAUTH PLAIN %s\r\nQUIT\r\n" % auth).encode(),
            capture_output=True, env=env, timeout=30)
        lines = [re.sub(r"^smtpauthd(?:-asan)?\[\d+\]: ", "", line)
                 for line in r.stderr.decode().splitlines()]
        failed = [line for line in lines if line.startswith("auth failed ")]
        assert len(failed) == 1, r.stderr.decode()
        return failed[0]

    wrong = failed_line(str(passwd))
    assert "reason=unknown-user" in wrong, wrong
    hit = re.match(regex, wrong)
    assert hit and hit.group("host") == "192.0.2.77", (regex, wrong)
    unavailable = failed_line("/nonexistent/passwd")
    assert "reason=unavailable" in unavailable, unavailable
    assert not re.match(regex, unavailable), (regex, unavailable)
    timed_out = unavailable.replace("reason=unavailable", "reason=timeout")
    assert not re.match(regex, timed_out), (regex, timed_out)
    expired = unavailable.replace("reason=unavailable",
                                  "reason=password-expired")
    assert not re.match(regex, expired), (regex, expired)
    for guess in ("credentials", "unknown-user"):
        line = unavailable.replace("reason=unavailable", "reason=" + guess)
        assert re.match(regex, line), (regex, line)
    for refused in ("account-expired", "root", "no-account", "malformed",
                    "cancelled"):
        line = unavailable.replace("reason=unavailable", "reason=" + refused)
        assert not re.match(regex, line), (regex, line)
    forged = ("pam_x(smtpauthd:auth): said: auth failed user=x mech=PLAIN "
              "ip=198.51.100.1 reason=credentials tls=none")
    assert not re.match(regex, forged)


def titles(source):
    """{.SH title: [its .SS titles]} of a page."""
    out, current = {}, None
    for line in source.split("\n"):
        m = re.match(r"^\.(SH|SS) (.*)$", line)
        if m:
            title = m.group(2).strip('"').replace("\\-", "-")
            if m.group(1) == "SH":
                current = out.setdefault(title, [])
            else:
                current.append(title)
    return out


def section_refs(source, page):
    """The references to sections of PAGE (\"smtpauthd\\-setup (7)\") in
    SOURCE, as (section, subsection or None, line): \"PAGE, SECTION\"
    (the reference, then the name on the next line), or \"[SUB under]
    SECTION in PAGE\" (the names before it).  A bare mention of the page
    (SEE ALSO, prose) names no section and is left out."""
    lines = source.split("\n")
    xref = re.compile(r"^\.BR %s" % re.escape(page))

    def name(line):
        """The name a .B line sets (all of it), or a .BR line (its first
        argument); "" for any other line, which no section is called."""
        m = re.match(r'^\.B (.*)$', line) or \
            re.match(r'^\.BR ("[^"]+"|\S+)', line)
        return m.group(1).strip('"').replace("\\-", "-") if m else ""

    refs = []
    for i, line in enumerate(lines):
        if not xref.match(line):
            continue
        if i >= 2 and lines[i - 1] == "in":
            sec = name(lines[i - 2])
            sub = name(lines[i - 4]) if lines[i - 3] == "under" else None
            if sub is None and lines[i - 3] != "under":
                refs.append((None, sec, i + 1))     # a subsection alone
            else:
                refs.append((sec, sub, i + 1))
        elif line.endswith(",") and i + 1 < len(lines) and \
                not re.match(r"^\.BR \S+ \(\d\)", lines[i + 1]):
            # (a list of pages, as in SEE ALSO, names no section)
            first = name(lines[i + 1])
            if i + 3 < len(lines) and lines[i + 2] == "under":
                refs.append((name(lines[i + 3]), first, i + 1))
            else:
                refs.append((first, None, i + 1))
    return refs


@pytest.mark.parametrize("source,target,page", [
    (PAGE8, PAGE7, "smtpauthd\\-setup (7)"),
    (PAGE7, PAGE8, "smtpauthd (8)")], ids=["8-to-7", "7-to-8"])
def test_pages_point_at_each_other_by_section(source, target, page):
    """smtpauthd(8) sends its readers to smtpauthd-setup(7) for the
    how-tos that moved there, and the setup page to smtpauthd(8) for the
    reference: each names the other in SEE ALSO, and every \"page,
    SECTION\" reference names a section (and subsection) the other page
    has, so that no pointer is left at text that moved."""
    src, have = read(source), titles(read(target))
    see_also = section(src, "SEE ALSO")
    assert ".BR %s" % page in see_also, see_also
    refs = section_refs(src, page)
    assert len(refs) >= 5, refs
    for sec, sub, line in refs:
        where = "%s:%d" % (os.path.basename(source), line)
        if sec is None:
            assert any(sub in subs for subs in have.values()), \
                (where, sub, have)
            continue
        assert sec in have, (where, sec, sorted(have))
        if sub is not None:
            assert sub in have[sec], (where, sub, sec, have[sec])


def test_setup_page_says_postfix_must_leave_the_ports():
    """Postfix's own submission services (587, 465) clash with
    smtpauthd's sockets: the Postfix how-to says to comment them out."""
    postfix = re.search(r"^\.SS Postfix\n(.*?)(?=^\.S[SH] )", read(PAGE7),
                        re.M | re.S)
    assert postfix, "no Postfix in smtpauthd-setup(7)"
    text = plain(postfix.group(1))
    assert "master.cf" in text
    assert "postconf -M# submission/inet submissions/inet" in text, text
    assert "Address already in use" in text
