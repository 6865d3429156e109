"""make install and make uninstall, always into a temporary DESTDIR (the
live system is never touched): the exact tree (files, modes, contents), the
paths written into the systemd units and the xinetd entry, the choice of
PAM service file, the files under SYSCONFDIR never replaced, and
smtpauthd.conf.example checked against the installed binary's -T.

make runs with -o smtpauthd: it installs the binary that is there and
never rebuilds it under the other tests (make check builds it first)."""

import os
import re
import shutil
import stat
import subprocess

import pytest

from smtptest import REPO

BUILT = os.path.join(REPO, "smtpauthd")
SHIPPED_SBIN = "/usr/local/sbin/smtpauthd"
UNITS = ["smtpauthd.socket", "smtpauthd@.service", "smtpauthd-smtps.socket",
         "smtpauthd-smtps@.service"]
# Variables of the environment that would change what make install does.
MAKE_VARS = ["DESTDIR", "PREFIX", "SBINDIR", "MANDIR", "SYSCONFDIR",
             "UNITDIR", "XINETDDIR", "PAMDIR", "DOCDIR", "PAM", "MAKEFLAGS",
             "SYSUSERSDIR", "TMPFILESDIR", "STRIP",
             "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"]
# Keys whose default smtpauthd works out (DESIGN: hostname is the host's
# FQDN, tls is starttls when tls-cert is set): the example shows an example
# value there; test_example_computed_defaults shows they really are.
COMPUTED = {"hostname", "tls"}

pytestmark = pytest.mark.skipif(shutil.which("make") is None,
                                reason="make not installed")


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.access(BUILT, os.X_OK):
        pytest.fail("%s not built (make smtpauthd)" % BUILT, pytrace=False)


def make(*args, umask=0o077, path=None, extra=None):
    """make -C REPO ARGS, with no make variable from the environment and a
    tight umask (the modes installed must not depend on it); PATH=path:PATH
    when path is given, and the variables of extra."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    if path:
        env["PATH"] = path + ":" + env.get("PATH", "/usr/bin:/bin")
    env.update(extra or {})
    return subprocess.run(
        ["make", "-C", REPO, "--no-print-directory", "-o", "smtpauthd"]
        + list(args), env=env, capture_output=True, text=True, timeout=120,
        preexec_fn=lambda: os.umask(umask), check=False)


def install(destdir, *args):
    r = make("install", "DESTDIR=%s" % destdir, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def uninstall(destdir, *args):
    r = make("uninstall", "DESTDIR=%s" % destdir, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def tree(root):
    """{path under root: mode} for every non-directory, and the set of
    directories."""
    files, dirs = {}, set()
    for top, dnames, fnames in os.walk(root):
        for d in dnames:
            p = os.path.join(top, d)
            if os.path.islink(p):
                files["/" + os.path.relpath(p, root)] = "symlink"
            else:
                dirs.add("/" + os.path.relpath(p, root))
        for f in fnames:
            p = os.path.join(top, f)
            st = os.lstat(p)
            files["/" + os.path.relpath(p, root)] = (
                "symlink" if stat.S_ISLNK(st.st_mode)
                else oct(stat.S_IMODE(st.st_mode)))
    return files, dirs


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def expected_pam():
    """The PAM file PAM=auto picks when DESTDIR has no password-auth."""
    if os.path.exists("/etc/pam.d/password-auth"):
        return "pam.d/smtpauthd.rhel"
    return "pam.d/smtpauthd"


class Layout:
    """Where each file goes for a set of make variables: the contract of
    make install, written out."""

    def __init__(self, **v):
        self.vars = v
        prefix = v.get("PREFIX", "/usr/local")
        self.sbin = v.get("SBINDIR", prefix + "/sbin")
        self.man = v.get("MANDIR", prefix + "/share/man")
        self.etc = v.get("SYSCONFDIR", "/etc")
        self.unit = v.get("UNITDIR", prefix + "/lib/systemd/system")
        self.sysusers = v.get("SYSUSERSDIR", prefix + "/lib/sysusers.d") + \
            "/smtpauthd.conf"
        self.tmpfiles = v.get("TMPFILESDIR", prefix + "/lib/tmpfiles.d") + \
            "/smtpauthd.conf"
        self.prefix = prefix
        self.doc = v.get("DOCDIR", prefix + "/share/doc/smtpauthd")
        self.binary = self.sbin + "/smtpauthd"
        self.conf = self.etc + "/smtpauthd.conf"
        self.pam = v.get("PAMDIR", self.etc + "/pam.d") + "/smtpauthd"
        self.xinetd = v.get("XINETDDIR", self.etc + "/xinetd.d") + \
            "/smtpauthd"

    def args(self):
        return ["%s=%s" % kv for kv in sorted(self.vars.items())]

    def etc_files(self):
        return {self.conf: "0o644", self.pam: "0o644", self.xinetd: "0o644"}

    def files(self):
        f = {
            self.binary: "0o755",
            self.man + "/man8/smtpauthd.8": "0o644",
            self.man + "/man5/smtpauthd.conf.5": "0o644",
            self.man + "/man7/smtpauthd-setup.7": "0o644",
            self.doc + "/smtpauthd.conf.example": "0o644",
            self.sysusers: "0o644",
            self.tmpfiles: "0o644",
        }
        f.update({self.unit + "/" + u: "0o644" for u in UNITS})
        f.update(self.etc_files())
        return f

    def sources(self):
        """Installed path -> repository file it is a copy of (the units and
        the xinetd entry with the binary's path rewritten)."""
        s = {
            self.binary: "smtpauthd",
            self.man + "/man8/smtpauthd.8": "man/smtpauthd.8",
            self.man + "/man5/smtpauthd.conf.5": "man/smtpauthd.conf.5",
            self.man + "/man7/smtpauthd-setup.7": "man/smtpauthd-setup.7",
            self.doc + "/smtpauthd.conf.example": "smtpauthd.conf.example",
            self.conf: "smtpauthd.conf.example",
            self.pam: expected_pam(),
            self.xinetd: "xinetd/smtpauthd",
            self.sysusers: "systemd/smtpauthd.sysusers",
            self.tmpfiles: "systemd/smtpauthd.tmpfiles",
        }
        s.update({self.unit + "/" + u: "systemd/" + u for u in UNITS})
        return s

    def man_paths(self):
        """(path in the pages as shipped, path installed), in the order
        they are replaced: the pages name the paths of the install."""
        return [(SHIPPED_SBIN, self.binary),
                ("/usr/local/lib/systemd/system", self.unit),
                ("/usr/local/lib/sysusers.d/smtpauthd.conf", self.sysusers),
                ("/usr/local/lib/tmpfiles.d/smtpauthd.conf", self.tmpfiles),
                ("/usr/local/share/doc/smtpauthd", self.doc),
                ("PREFIX=/usr/local", "PREFIX=" + self.prefix)]


LAYOUTS = {
    "prefix-usr": dict(PREFIX="/usr"),
    "default": dict(),
    "some-dirs": dict(PREFIX="/opt/sa", SBINDIR="/opt/sa/bin",
                      MANDIR="/opt/sa/man", SYSCONFDIR="/opt/sa/etc",
                      UNITDIR="/opt/sa/units"),
    "every-dir": dict(PREFIX="/opt/sa", SBINDIR="/opt/sb/bin",
                      MANDIR="/opt/sb/man", SYSCONFDIR="/opt/sb/etc",
                      UNITDIR="/opt/sb/units", DOCDIR="/opt/sb/doc",
                      PAMDIR="/opt/sb/pam", XINETDDIR="/opt/sb/xinetd",
                      SYSUSERSDIR="/opt/sb/sysusers",
                      TMPFILESDIR="/opt/sb/tmpfiles"),
}


def unit_exec_start(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return lines[0][len("ExecStart="):]


def xinetd_services(text):
    """{service name: {attribute: value}} of an xinetd file."""
    services = {}
    for name, body in re.findall(r"^service\s+(\S+)\s*\{(.*?)^\}", text,
                                 re.M | re.S):
        attrs = {}
        for line in body.splitlines():
            m = re.match(r"\s*([a-z_]+)\s*(\+?=)\s*(.*?)\s*$", line)
            if m:
                attrs[m.group(1)] = m.group(3)
        services[name] = attrs
    return services


LIVE = ["/usr/local/sbin/smtpauthd", "/usr/sbin/smtpauthd",
        "/etc/smtpauthd.conf", "/etc/xinetd.d/smtpauthd",
        "/usr/local/share/man/man8/smtpauthd.8",
        "/usr/local/share/man/man7/smtpauthd-setup.7",
        "/usr/local/lib/systemd/system/smtpauthd.socket",
        "/usr/lib/systemd/system/smtpauthd.socket",
        "/usr/local/lib/sysusers.d/smtpauthd.conf",
        "/usr/lib/sysusers.d/smtpauthd.conf",
        "/usr/local/lib/tmpfiles.d/smtpauthd.conf",
        "/usr/lib/tmpfiles.d/smtpauthd.conf",
        "/usr/local/share/doc/smtpauthd", "/opt/sa", "/opt/sb"]


def live_state():
    out = {}
    for p in LIVE:
        try:
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            out[p] = None
    return out


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_install_and_uninstall_tree(tmp_path, name):
    lay = Layout(**LAYOUTS[name])
    dest = str(tmp_path / "root")
    before = live_state()
    out = install(dest, *lay.args())
    assert live_state() == before, "make install with DESTDIR touched /"
    # The closing hint names xinetd only when its entry was installed.
    assert "set disable = no in %s and reload" % lay.xinetd in out, out

    files, dirs = tree(dest)
    assert files == lay.files(), out
    for d in dirs:
        mode = stat.S_IMODE(os.stat(os.path.join(dest, d.lstrip("/"))).st_mode)
        assert mode == 0o755, (d, oct(mode))

    sbin = lay.binary
    for path, src in lay.sources().items():
        got = read(dest + path, "rb")
        want = read(os.path.join(REPO, src), "rb")
        if src.endswith((".service", "xinetd/smtpauthd")):
            assert SHIPPED_SBIN.encode() in want, src
            want = want.replace(SHIPPED_SBIN.encode(), sbin.encode())
        if src.startswith("man/"):
            for shipped, installed in lay.man_paths():
                want = want.replace(shipped.encode(), installed.encode())
        assert got == want, "%s is not %s" % (path, src)

    # The services start the installed binary; no unit still names the
    # path shipped in the source tree.
    for u in UNITS:
        text = read(dest + lay.unit + "/" + u)
        if u.endswith(".service"):
            want = sbin + (" -o tls=implicit" if "smtps" in u else "")
            assert unit_exec_start(text) == want, u
        if sbin != SHIPPED_SBIN:
            assert SHIPPED_SBIN not in text, u
    assert os.access(dest + sbin, os.X_OK)

    services = xinetd_services(read(dest + lay.xinetd))
    assert sorted(services) == ["submission", "submissions"]
    for svc, attrs in services.items():
        assert attrs["server"] == sbin, svc
        # Installed, it changes nothing until the administrator enables it.
        assert attrs["disable"] == "yes", svc
    assert services["submissions"]["server_args"] == "-o tls=implicit"

    # Installing again (an upgrade) works and keeps the files under /etc.
    marker = "# edited by the administrator\n"
    for p in lay.etc_files():
        with open(dest + p, "a") as f:
            f.write(marker)
    out = install(dest, *lay.args())
    for p in lay.etc_files():
        assert read(dest + p).endswith(marker), p
        assert "kept " + dest + p in out, out
    assert tree(dest)[0] == lay.files()

    out = uninstall(dest, *lay.args())
    assert live_state() == before, "make uninstall with DESTDIR touched /"
    files, dirs = tree(dest)
    assert files == lay.etc_files(), out
    for p in lay.etc_files():
        assert read(dest + p).endswith(marker), p
        assert "left " + dest + p in out, out
    assert lay.doc not in dirs, "the doc directory is left"


def test_existing_files_never_replaced(tmp_path):
    """A PAM file, configuration and xinetd entry already there (a symbolic
    link, even a dangling one, included) are left exactly as they were."""
    dest = tmp_path / "root"
    (dest / "etc/pam.d").mkdir(parents=True)
    (dest / "etc/xinetd.d").mkdir(parents=True)
    pam = dest / "etc/pam.d/smtpauthd"
    conf = dest / "etc/smtpauthd.conf"
    xinetd = dest / "etc/xinetd.d/smtpauthd"
    pam.write_text("auth required pam_deny.so  # site marker 1\n")
    pam.chmod(0o600)
    conf.write_text("hostname marker.example\n")
    conf.chmod(0o640)
    os.symlink("/nonexistent/smtpauthd-xinetd", str(xinetd))
    out = install(str(dest), "PREFIX=/usr")
    assert pam.read_text() == "auth required pam_deny.so  # site marker 1\n"
    assert stat.S_IMODE(pam.stat().st_mode) == 0o600
    assert conf.read_text() == "hostname marker.example\n"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert os.readlink(str(xinetd)) == "/nonexistent/smtpauthd-xinetd"
    assert not os.path.exists("/nonexistent/smtpauthd-xinetd")
    for p in (pam, conf, xinetd):
        assert "install: kept %s" % p in out, out
    # The rest is installed as usual.
    assert (dest / "usr/sbin/smtpauthd").exists()
    assert (dest / "usr/share/doc/smtpauthd/smtpauthd.conf.example").exists()


@pytest.mark.parametrize("pam,password_auth,want", [
    (None, True, "pam.d/smtpauthd.rhel"),
    (None, False, None),            # the building system decides
    ("rhel", False, "pam.d/smtpauthd.rhel"),
    ("debian", True, "pam.d/smtpauthd"),
])
def test_pam_variant(tmp_path, pam, password_auth, want):
    dest = tmp_path / "root"
    (dest / "etc/pam.d").mkdir(parents=True)
    if password_auth:
        (dest / "etc/pam.d/password-auth").write_text("auth required x\n")
    args = ["PREFIX=/usr"] + (["PAM=" + pam] if pam else [])
    install(str(dest), *args)
    want = want or expected_pam()
    assert (dest / "etc/pam.d/smtpauthd").read_bytes() == \
        read(os.path.join(REPO, want), "rb")


def test_pam_variant_unknown_installs_nothing(tmp_path):
    dest = tmp_path / "root"
    r = make("install", "DESTDIR=%s" % dest, "PAM=suse")
    assert r.returncode != 0
    assert "PAM=suse" in r.stderr
    assert not dest.exists()


@pytest.mark.parametrize("where", ["DESTDIR", "PREFIX", "SBINDIR", "SYSCONFDIR"])
@pytest.mark.parametrize("bad", [" ", "\t", "'", '"', "|", "&", ";", "\\", "`"])
def test_path_with_shell_characters_installs_nothing(tmp_path, where, bad):
    """Paths go unquoted through the shell, sed and ExecStart=: a blank or
    a shell or sed character is refused before anything is written."""
    dest = tmp_path / "root"
    weird = str(tmp_path / ("x%sy" % bad))
    args = ["DESTDIR=%s" % (weird if where == "DESTDIR" else dest)]
    if where != "DESTDIR":
        args.append("%s=%s" % (where, weird))
    for target in ("install", "uninstall"):
        r = make(target, *args)
        assert r.returncode != 0, (target, r.stdout)
        assert "is not supported" in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)
    assert not os.path.exists(os.path.join(REPO, "x"))


def test_uninstall_leaves_a_docdir_with_other_files(tmp_path):
    dest = tmp_path / "root"
    install(dest)
    doc = dest / "usr/local/share/doc/smtpauthd"
    (doc / "NOTES").write_text("the admin's\n")
    out = uninstall(dest)
    assert "left %s: not empty" % doc in out, out
    assert sorted(os.listdir(doc)) == ["NOTES"]
    assert not (dest / "usr/local/sbin/smtpauthd").exists()


def test_uninstall_refused_under_an_enabled_socket(tmp_path):
    """On the live system (no DESTDIR), make uninstall stops while
    systemctl says a socket unit is enabled or active.  Not touching the
    live system: systemctl is a stand-in, and PREFIX and SYSCONFDIR point
    into the temporary tree."""
    dest = tmp_path / "root"
    install(str(dest), "PREFIX=/usr")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(
        '#!/bin/sh\necho "$@" >> %s/calls\n'
        '[ "$3" = smtpauthd-smtps.socket ] && [ "$2" = "$STATE" ]\n' % fake)
    (fake / "systemctl").chmod(0o755)
    live = ["PREFIX=%s/usr" % dest, "SYSCONFDIR=%s/etc" % dest]
    before = tree(str(dest))
    for state in ("is-enabled", "is-active"):
        r = make("uninstall", *live, path=str(fake), extra={"STATE": state})
        assert r.returncode != 0, r.stdout
        assert "systemctl disable --now smtpauthd-smtps.socket" in r.stderr
        assert tree(str(dest)) == before
    r = make("uninstall", *live, path=str(fake))
    assert r.returncode == 0, r.stderr
    assert sorted(tree(str(dest))[0]) == sorted(Layout(
        PREFIX="/usr").etc_files())
    assert "-q is-enabled smtpauthd.socket" in (fake / "calls").read_text()


def test_systemd_analyze_verify(tmp_path):
    """systemd-analyze verify, rooted at DESTDIR: the units parse, and the
    binary ExecStart names exists there and is executable."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")

    def verify(dest):
        return subprocess.run(
            ["systemd-analyze", "verify", "--man=no",
             "--recursive-errors=no", "--root=%s" % dest] + UNITS,
            capture_output=True, text=True, timeout=60, check=False)

    for name in ("prefix-usr", "default"):
        dest = str(tmp_path / name)
        lay = Layout(**LAYOUTS[name])
        install(dest, *lay.args())
        r = verify(dest)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        # It does look at these files: a bad value and a missing binary
        # are found.
        sock = dest + lay.unit + "/smtpauthd.socket"
        good = read(sock)
        with open(sock, "w") as f:
            f.write(good.replace("Accept=yes", "Accept=maybe"))
        r = verify(dest)
        assert r.returncode != 0 and "smtpauthd.socket" in r.stderr, r.stderr
        with open(sock, "w") as f:
            f.write(good)
        os.rename(dest + lay.binary, dest + lay.binary + ".away")
        r = verify(dest)
        assert r.returncode != 0 and lay.binary in r.stderr, r.stderr


# ------------------------------------------------ smtpauthd.conf.example

SETTING = re.compile(r"#([a-z][a-z0-9-]*)(?: (.*))?$")


def example_blocks(text):
    """The example's paragraphs (separated by blank lines) as (prose lines,
    [(key, value or None)]); every line is blank, a "#" or "# " comment,
    or a commented-out setting "#key value"."""
    blocks = []
    for para in re.split(r"\n\s*\n", text.strip("\n")):
        prose, settings = [], []
        for line in para.splitlines():
            m = SETTING.match(line)
            if m:
                settings.append((m.group(1), m.group(2)))
            else:
                assert line == "#" or line.startswith("# "), \
                    "not a comment or a commented setting: %r" % line
                prose.append(line[2:])
        blocks.append((" ".join(prose), settings))
    return blocks


def parse_T(out):
    conf = {}
    for line in out.splitlines():
        k, sep, v = line.partition(" ")
        assert k not in conf, "printed twice: " + k
        conf[k] = v if sep else None
    return conf


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(DESTDIR, Layout) of an installation with PREFIX=/usr."""
    dest = str(tmp_path_factory.mktemp("installed") / "root")
    lay = Layout(PREFIX="/usr")
    install(dest, *lay.args())
    return dest, lay


def T(installed, *args):
    dest, lay = installed
    r = subprocess.run([dest + lay.binary, "-T"] + list(args),
                       capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_example_is_the_defaults(installed):
    """The installed /etc/smtpauthd.conf, as it comes, sets nothing: -T
    prints exactly what it prints with an empty file."""
    dest, lay = installed
    assert T(installed, "-f", dest + lay.conf) == T(installed, "-f",
                                                       "/dev/null")


def test_example_lists_every_key_at_its_default(installed):
    dest, lay = installed
    defaults = parse_T(T(installed, "-f", "/dev/null"))
    blocks = example_blocks(read(dest + lay.conf))
    shown = {}
    for prose, settings in blocks:
        for key, value in settings:
            assert key not in shown, "listed twice: " + key
            shown[key] = (value, prose)
    assert sorted(shown) == sorted(defaults)
    for key, default in defaults.items():
        value, prose = shown[key]
        if default is None or key in COMPUTED:
            # No fixed default: an example value, and the comment says
            # what happens without it.
            assert re.search(r"\bDefault: |\bUnset by default\b", prose), \
                (key, prose)
        else:
            assert value == default, (key, value, default)


def test_example_values_mean_what_they_say(installed, tmp_path):
    """Every line uncommented: a valid configuration whose -T shows each
    value as written."""
    dest, lay = installed
    settings = [s for _, ss in example_blocks(read(dest + lay.conf))
                for s in ss]
    conf = tmp_path / "all.conf"
    conf.write_text("".join("%s %s\n" % (k, v) if v is not None else k + "\n"
                            for k, v in settings))
    got = parse_T(T(installed, "-f", str(conf)))
    assert got == dict(settings)


def test_example_computed_defaults(installed):
    """COMPUTED is no loophole: those defaults really depend on something."""
    plain = parse_T(T(installed, "-f", "/dev/null"))
    with_cert = parse_T(T(installed, "-f", "/dev/null", "-o", "tls-cert=/c",
                          "-o", "tls-key=/k"))
    assert plain["tls"] != with_cert["tls"]
    dest, lay = installed
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("hostname: needs unshare and root")
    r = subprocess.run(
        [unshare, "--uts", "sh", "-c",
         'hostname probe-7.example.net && exec "$0" -T -f /dev/null',
         dest + lay.binary], capture_output=True, text=True, timeout=60,
        check=False)
    if r.returncode != 0:
        pytest.skip("unshare --uts: " + r.stderr.strip())
    assert parse_T(r.stdout)["hostname"] == "probe-7.example.net"


def test_fail2ban_files_only_where_fail2ban_is(tmp_path):
    """contrib/fail2ban's filter and jail go into $(DESTDIR)/etc/fail2ban
    when that exists, never replace a file there (a dangling link
    included), and are left by make uninstall; without the directory
    nothing is made (test_install_and_uninstall_tree checks the whole
    tree)."""
    dest = tmp_path / "root"
    f2b = dest / "etc/fail2ban"
    (f2b / "filter.d").mkdir(parents=True)      # jail.d is made
    out = install(str(dest), "PREFIX=/usr")
    for sub in ("filter.d", "jail.d"):
        got = f2b / sub / "smtpauthd.conf"
        assert got.read_bytes() == read(os.path.join(
            REPO, "contrib/fail2ban", sub, "smtpauthd.conf"), "rb"), out
        assert stat.S_IMODE(got.stat().st_mode) == 0o644
    jail = f2b / "jail.d/smtpauthd.conf"
    assert re.search(r"^enabled\s*=\s*false$", jail.read_text(), re.M), \
        "the jail is installed disabled"
    jail.write_text("[smtpauthd]\nenabled = true\n")
    (f2b / "filter.d/smtpauthd.conf").unlink()
    os.symlink("/nonexistent/smtpauthd-f2b", str(f2b / "filter.d/smtpauthd.conf"))
    out = install(str(dest), "PREFIX=/usr")
    assert jail.read_text() == "[smtpauthd]\nenabled = true\n"
    assert os.readlink(str(f2b / "filter.d/smtpauthd.conf")) == \
        "/nonexistent/smtpauthd-f2b"
    assert "install: kept %s" % jail in out, out
    out = uninstall(str(dest), "PREFIX=/usr")
    assert jail.exists() and "left %s" % jail in out, out
    assert tree(str(f2b))[0] == {"/filter.d/smtpauthd.conf": "symlink",
                                 "/jail.d/smtpauthd.conf": "0o644"}

    other = tmp_path / "other"
    out = install(str(other), "PREFIX=/usr")
    assert not (other / "etc/fail2ban").exists(), out


# ------------------------------------------- what a package would ship

MAN_PAGES = ["/man8/smtpauthd.8", "/man5/smtpauthd.conf.5",
             "/man7/smtpauthd-setup.7"]


@pytest.mark.parametrize("name", ["prefix-usr", "some-dirs"])
def test_man_pages_name_the_installed_paths(tmp_path, name):
    """Installed elsewhere than /usr/local, the pages say where: no
    /usr/local is left in them, and they name the binary, the units and
    the sysusers.d and tmpfiles.d files where they are."""
    lay = Layout(**LAYOUTS[name])
    dest = str(tmp_path / "root")
    install(dest, *lay.args())
    text = "".join(read(dest + lay.man + p) for p in MAN_PAGES)
    assert "/usr/local" not in text
    for path in (lay.binary, lay.unit + "/smtpauthd.socket", lay.sysusers,
                 lay.tmpfiles, lay.doc + "/smtpauthd.conf.example",
                 "PREFIX=" + lay.prefix):
        assert path in text, path
    # What the program reads is where it reads it, whatever SYSCONFDIR.
    assert "\n.I /etc/smtpauthd.conf\n" in text


def test_installed_pages_find_each_other(tmp_path):
    """The setup page is installed in man7 and says it is section 7 (man
    finds a page by both), and every smtpauthd page one installed page
    names, with its section, is installed where that section's pages go:
    smtpauthd(8) and smtpauthd-setup(7) point at each other."""
    lay = Layout(**LAYOUTS["prefix-usr"])
    dest = str(tmp_path / "root")
    install(dest, *lay.args())
    man = dest + lay.man
    named = set()
    for p in MAN_PAGES:
        text = read(man + p)
        section = p.rsplit(".", 1)[1]
        assert p.startswith("/man%s/" % section), p
        th = re.search(r"^\.TH (\S+) (\S+) ", text, re.M)
        assert th and th.group(2) == section, (p, th)
        title = os.path.basename(p).rsplit(".", 1)[0]
        assert th.group(1).replace("\\-", "-") == title.upper(), th.group(1)
        refs = {(n.replace("\\-", "-"), s) for n, s in
                re.findall(r"^\.BR (smtpauthd[\w.\\-]*) \((\d)\)", text,
                           re.M)}
        assert refs, p
        named |= {(title, n, s) for n, s in refs}
    for _, n, s in named:
        assert os.path.isfile("%s/man%s/%s.%s" % (man, s, n, s)), (n, s)
    assert ("smtpauthd", "smtpauthd-setup", "7") in named
    assert ("smtpauthd-setup", "smtpauthd", "8") in named


def sections(path):
    r = subprocess.run(["readelf", "-S", "-W", path], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"\] (\.\S+)", r.stdout))


def test_install_strip(tmp_path):
    """make install-strip installs the binary without symbols or debugging
    information, with $(STRIP); make install, as built (-g)."""
    lay = Layout()
    plain = str(tmp_path / "plain")
    install(plain)
    assert {".symtab", ".debug_info"} <= sections(plain + lay.binary)
    stripped = str(tmp_path / "stripped")
    r = make("install-strip", "DESTDIR=%s" % stripped)
    assert r.returncode == 0, r.stdout + r.stderr
    got = sections(stripped + lay.binary)
    assert ".symtab" not in got and ".debug_info" not in got, got
    assert ".text" in got
    v = subprocess.run([stripped + lay.binary, "-V"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert v.returncode == 0 and v.stdout.startswith("smtpauthd "), v
    # The rest of the tree is make install's.
    assert tree(stripped)[0] == tree(plain)[0]
    # STRIP is the program used.
    r = make("install-strip", "DESTDIR=%s" % (tmp_path / "false"),
             "STRIP=/bin/false")
    assert r.returncode != 0, r.stdout


def systemd_tool(name):
    path = shutil.which(name)
    if path is None:
        msg = name + " not installed (systemd)"
        if os.environ.get("SMTPAUTHD_REQUIRE_E2E") == "1":
            pytest.fail(msg + " (SMTPAUTHD_REQUIRE_E2E is set)",
                        pytrace=False)
        pytest.skip(msg)
    return path


@pytest.mark.parametrize("name", ["default", "prefix-usr"])
def test_sysusers_and_tmpfiles(tmp_path, name):
    """The installed sysusers.d and tmpfiles.d files are where systemd
    looks (--cat-config, rooted at DESTDIR), parse, and make what -T
    names (privsep-user; privsep-dir and the default state's directory)
    the way the code wants them: a user of neither uid nor gid 0 without
    home or shell, directories root's with modes 555 and 700, which -t
    then accepts."""
    sysusers = systemd_tool("systemd-sysusers")
    tmpfiles = systemd_tool("systemd-tmpfiles")
    lay = Layout(**LAYOUTS[name])
    dest = str(tmp_path / "root")
    install(dest, *lay.args())
    r = subprocess.run([dest + lay.binary, "-T", "-f", "/dev/null"],
                       capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    conf = parse_T(r.stdout)
    assert conf["state"].startswith("sqlite:"), conf["state"]
    statedir = os.path.dirname(conf["state"][len("sqlite:"):])

    def run(*args):
        r = subprocess.run(list(args), capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 0 and "rror" not in r.stderr, \
            (args, r.stdout, r.stderr)
        return r.stdout

    for tool, path in ((sysusers, lay.sysusers), (tmpfiles, lay.tmpfiles)):
        out = run(tool, "--root=" + dest, "--cat-config", "--no-pager")
        assert "# %s%s\n" % (dest, path) in out, out
    # Every line, not only those the checks below look at.
    lines = [ln.split() for ln in read(dest + lay.tmpfiles).splitlines()
             if ln and not ln.startswith("#")]
    assert sorted(ln[1] for ln in lines) == sorted([conf["privsep-dir"],
                                                      statedir])
    users = [ln for ln in read(dest + lay.sysusers).splitlines()
             if ln and not ln.startswith("#")]
    assert len(users) == 1 and users[0].split()[:2] == [
        "u", conf["privsep-user"]], users

    # systemd-sysusers writes the accounts into DESTDIR/etc only.
    run(sysusers, "--root=" + dest)
    pw = {ln.split(":")[0]: ln.split(":")
          for ln in read(dest + "/etc/passwd").splitlines()}
    user = pw[conf["privsep-user"]]
    assert user[2] != "0" and user[3] != "0", user
    assert user[5:] == ["/nonexistent", "/usr/sbin/nologin"], user
    group = [ln for ln in read(dest + "/etc/group").splitlines()
             if ln.split(":")[2] == user[3]]
    assert group == ["%s:x:%s:" % (conf["privsep-user"], user[3])], group

    if os.geteuid() != 0:
        return      # the directories are root's: made as root only
    run(tmpfiles, "--root=" + dest, "--create")
    for d, mode in ((conf["privsep-dir"], 0o555), (statedir, 0o700)):
        st = os.lstat(dest + d)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0, d
        assert stat.S_IMODE(st.st_mode) == mode, (d, oct(st.st_mode))
    r = subprocess.run(
        [dest + lay.binary, "-t", "-f", "/dev/null",
         "-o", "privsep-dir=" + dest + conf["privsep-dir"],
         "-o", "state=sqlite:%s%s/state.db" % (dest, statedir)],
        capture_output=True, text=True, timeout=60, check=False)
    assert "privsep-dir" not in r.stderr and "state " not in r.stderr, \
        r.stderr
    assert os.path.exists(dest + statedir + "/state.db")
