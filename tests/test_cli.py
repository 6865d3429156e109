"""The command line: -V, -H, -t, -T, -o, -f; configuration errors at
connection time (421 4.3.0, exit 78)."""

import os
import re

import pytest

from smtptest import HOSTNAME, REPO, check

KEYS = ["hostname", "auth", "pam-service", "passwd-file", "auth-require-tls",
        "tls", "tls-cert", "tls-key", "sendmail", "inject", "received-client",
        "max-message-size",
        "max-recipients", "max-auth-failures", "max-errors",
        "auth-failure-delay", "timeout", "data-timeout", "sendmail-timeout",
        "auth-timeout", "sendmail-umask", "spool-dir", "privsep-user",
        "sender-policy", "sender-domains", "sender-delimiter", "sender-map",
        "sender-header-check",
        "policy-service", "policy-service-timeout",
        "policy-service-default-action", "proxy-protocol-from",
        "state-password-file", "state-prefix", "state-timeout"]

DEFAULTS = {
    "auth": "pam", "pam-service": "smtpauthd",
    "passwd-file": "/etc/smtpauthd/passwd", "auth-require-tls": "yes",
    "tls": "none", "tls-cert": None, "tls-key": None,
    "sendmail": "/usr/sbin/sendmail", "inject": "envelope",
    "received-client": "show",
    "max-message-size": "36700160", "max-recipients": "100",
    "max-auth-failures": "3", "max-errors": "10", "auth-failure-delay": "2",
    "timeout": "300", "data-timeout": "600", "sendmail-timeout": "300",
    "auth-timeout": "30",
    "sendmail-umask": "022",
    "spool-dir": "/var/tmp", "privsep-user": "smtpauthd",
    "sender-policy": "own", "sender-domains": None, "sender-delimiter": "+",
    "sender-map": None, "sender-header-check": "no",
    "policy-service": None, "policy-service-timeout": "10",
    "policy-service-default-action": "DUNNO",
    "proxy-protocol-from": None,
    "state-password-file": None, "state-prefix": "smtpauthd:",
    "state-timeout": "200",
}


def parse_T(out):
    conf = {}
    for line in out.decode().splitlines():
        k, sep, v = line.partition(" ")
        assert k not in conf, "key printed twice: %s" % k
        conf[k] = v if sep else None
    return conf


def version():
    with open(os.path.join(REPO, "smtpauthd.h")) as f:
        return re.search(r'#define\s+SMTPAUTHD_VERSION\s+"([^"]+)"', f.read()).group(1)


def test_V(env):
    r = env.run(["-V"])
    assert r.returncode == 0, r
    assert version() in r.stdout.decode(), r.stdout


# ---------------------------------------------------------------- -H

def test_H_makes_yescrypt_hash(env):
    r = env.run(["-H"], input=b"Some-Pw-9\n")
    assert r.returncode == 0, r
    h = r.stdout.decode().strip()
    assert re.fullmatch(r"\$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{43}", h), h
    assert "Some-Pw-9" not in r.stdout.decode() + r.stderr.decode()
    r2 = env.run(["-H"], input=b"Some-Pw-9\n")
    assert r2.stdout.decode().strip() != h, "no salt"


def test_H_hash_verifies_with_crypt(env):
    crypt = pytest.importorskip("crypt")
    h = env.run(["-H"], input=b"Some-Pw-9\n").stdout.decode().strip()
    assert crypt.crypt("Some-Pw-9", h) == h
    assert crypt.crypt("Some-Pw-8", h) != h


def test_H_hash_accepted_by_file_backend(env):
    h = env.run(["-H"], input="Gr\u00fcn pass:9\n".encode()).stdout.decode().strip()
    env.users = {}
    env.write_passwd(["erin:" + h])
    c = env.start()
    c.ehlo()
    check(c.auth_plain("erin", "Gr\u00fcn pass:8"), 535, "5.7.8")
    check(c.auth_plain("erin", "Gr\u00fcn pass:9"), 235, "2.7.0")


# ---------------------------------------------------------------- -t

def test_t_good_config_file_auth(env):
    path = env.write_config()
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0, r


def test_t_good_config_pam_auth(env):
    """pam-service naming a service that exists in /etc/pam.d."""
    if not os.path.exists("/etc/pam.d/login"):
        pytest.skip("no /etc/pam.d/login")
    path = env.write_config({"auth": "pam", "pam-service": "login"})
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0, r


BAD_LINES = [
    ("unknown-key", "nosuchkey yes", "nosuchkey"),
    ("unknown-key-novalue", "nosuchkey", "nosuchkey"),
    ("auth", "auth ldap", "auth"),
    ("auth-require-tls", "auth-require-tls maybe", "auth-require-tls"),
    ("tls", "tls sometimes", "tls"),
    ("inject", "inject smtp", "inject"),
    ("received-client", "received-client anonymous", "received-client"),
    ("size-word", "max-message-size big", "max-message-size"),
    ("size-negative", "max-message-size -1", "max-message-size"),
    ("size-overflow", "max-message-size 99999999999999999999999", "max-message-size"),
    ("size-trailing", "max-message-size 10x", "max-message-size"),
    ("max-recipients", "max-recipients many", "max-recipients"),
    ("max-recipients-over-argv", "max-recipients 5001", "max-recipients"),
    ("max-recipients-old-max", "max-recipients 100000", "max-recipients"),
    ("max-auth-failures", "max-auth-failures -3", "max-auth-failures"),
    ("max-errors", "max-errors ten", "max-errors"),
    ("auth-failure-delay", "auth-failure-delay soon", "auth-failure-delay"),
    ("timeout", "timeout x", "timeout"),
    ("timeout-empty", "timeout", "timeout"),
    ("data-timeout", "data-timeout -5", "data-timeout"),
    ("sendmail-timeout", "sendmail-timeout forever", "sendmail-timeout"),
    ("auth-timeout-zero", "auth-timeout 0", "auth-timeout"),
    ("auth-timeout-big", "auth-timeout 86401", "auth-timeout"),
    ("sendmail-umask-8", "sendmail-umask 028", "sendmail-umask"),
    ("sendmail-umask-big", "sendmail-umask 1000", "sendmail-umask"),
    ("sendmail-umask-long", "sendmail-umask 00022", "sendmail-umask"),
    ("sendmail-umask-hex", "sendmail-umask 0x12", "sendmail-umask"),
    ("sendmail-umask-empty", "sendmail-umask", "sendmail-umask"),
    ("sendmail-missing", "sendmail /nonexistent/sendmail", "sendmail"),
    ("passwd-file-missing", "passwd-file /nonexistent/passwd", "passwd-file"),
    ("sender-policy", "sender-policy everyone", "sender-policy"),
    ("sender-delimiter", "sender-delimiter +a", "sender-delimiter"),
    ("sender-domains", "sender-domains example.org @x", "sender-domains"),
    ("sender-map-missing", "sender-map /nonexistent/map", "sender-map"),
]


@pytest.mark.parametrize("name,line,key", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_t_bad_line(env, name, line, key):
    path = env.write_config(raw=line + "\n")
    r = env.run(["-t", "-f", path])
    assert r.returncode == 78, r
    err = r.stderr.decode()
    assert key in err, err
    assert all(l.startswith("smtpauthd: ") for l in err.splitlines()), err


def test_t_lists_every_problem(env):
    lines = [b[1] for b in BAD_LINES[:8]]
    path = env.write_config(raw="\n".join(lines) + "\n")
    r = env.run(["-t", "-f", path])
    assert r.returncode == 78
    err = r.stderr.decode().splitlines()
    assert len(err) >= len(lines), err
    for _, line, key in BAD_LINES[:8]:
        assert any(key in e for e in err), (key, err)


@pytest.mark.parametrize("opt", ["nosuchkey=1", "timeout=x", "auth=ldap",
                                 "max-errors="])
def test_t_bad_option(env, opt):
    path = env.write_config()
    r = env.run(["-t", "-f", path, "-o", opt])
    assert r.returncode == 78, r
    assert opt.split("=")[0] in r.stderr.decode()


def test_t_missing_named_file(env):
    r = env.run(["-t", "-f", os.path.join(env.dir, "nonexistent.conf")])
    assert r.returncode == 78, r
    assert r.stderr


def test_t_comments_and_blank_lines(env):
    path = env.write_config(raw="\n# a comment\n   \n#timeout x\n")
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0, r


# ---------------------------------------------------------------- -T

def test_T_defaults(env):
    path = env.write("empty.conf", "")
    r = env.run(["-T", "-f", path])
    assert r.returncode == 0, r
    conf = parse_T(r.stdout)
    assert set(KEYS) <= set(conf), "keys missing: %s" % (set(KEYS) - set(conf))
    for k, v in DEFAULTS.items():
        assert conf[k] == v, (k, conf[k])
    assert conf["hostname"], "hostname empty"


def test_T_every_key_from_file(env):
    path = env.write_config({"max_errors": 7, "inject": "headers"})
    r = env.run(["-T", "-f", path])
    assert r.returncode == 0, r
    conf = parse_T(r.stdout)
    assert set(KEYS) <= set(conf), "keys missing: %s" % (set(KEYS) - set(conf))
    assert conf["hostname"] == HOSTNAME
    assert conf["auth"] == "file"
    assert conf["max-errors"] == "7"
    assert conf["inject"] == "headers"
    assert conf["sendmail"] == env.sendmail
    assert conf["tls-cert"] is None and conf["tls-key"] is None


def test_T_last_setting_wins_and_o_after_file(env):
    path = env.write_config({"timeout": 40}, raw="timeout 50\nmax-errors 4\n")
    r = env.run(["-T", "-f", path, "-o", "max-errors=6", "-o", "max-errors=8"])
    assert r.returncode == 0, r
    conf = parse_T(r.stdout)
    assert conf["timeout"] == "50"
    assert conf["max-errors"] == "8"


def test_T_bad_config_exit_78(env):
    path = env.write_config(raw="nosuchkey 1\n")
    r = env.run(["-T", "-f", path])
    assert r.returncode == 78, r
    assert "nosuchkey" in r.stderr.decode()


# ---------------------------------------------------------------- at connection

@pytest.mark.parametrize("how", ["file", "option", "missing-file"])
def test_config_error_at_connection(env, how):
    if how == "file":
        c = env.start(raw="nosuchkey 1\n", greet=False)
    elif how == "option":
        c = env.start(args=["-o", "timeout=never"], greet=False)
    else:
        c = env.start(config_path=os.path.join(env.dir, "nonexistent.conf"),
                      greet=False)
    check(c.reply(), 421, "4.3.0")
    assert c.closed()
    assert c.wait_exit() == 78
    env.no_calls()


def test_unknown_option(env):
    r = env.run(["-Z"])
    assert r.returncode != 0


@pytest.mark.parametrize("value,printed", [("7", "007"), ("027", "027"),
                                           ("0002", "002"), ("777", "777")])
def test_T_sendmail_umask_octal(env, value, printed):
    """sendmail-umask is octal in and out, three digits as umask(1) prints."""
    r = env.run(["-T", "-f", "/dev/null", "-o", "sendmail-umask=" + value])
    assert r.returncode == 0, r
    assert parse_T(r.stdout)["sendmail-umask"] == printed
