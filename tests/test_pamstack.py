"""PAM fails closed (pamstack.c, auth.c): a missing service file is never
libpam's fallback to "other", a stack whose include or module is missing
answers 454 (reason=unavailable) instead of 535 or, worse, 235, and every
PAM code that is not a verdict on the credentials is 454 too, so that
fail2ban does not ban users while the administrator's file is broken.
-t follows the service file the same way.  pam_wrapper without root; the
same with real pam_unix as root is in test_root.py."""

import os

import pytest

from smtptest import check, find_events, kv

ALICE = "Alice-Pw-1"   # PAM_USERS["alice"]

PERMIT = "auth required pam_permit.so\naccount required pam_permit.so\n"


def auth_events(log):
    return [kv(e) for e in find_events(log, "auth")]


def svc(env, name):
    return os.path.join(env.dir, "pam.d", name)


def rewrite(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def expect_unavailable(env, c, problem):
    check(c.auth_plain("alice", ALICE), 454, "4.7.0")
    check(c.mail("alice@example.org"), 530, "5.7.0")
    ev = auth_events(c.log)
    assert [e["reason"] for e in ev] == ["unavailable"], c.log
    assert "cannot work: " in c.log and problem in c.log, c.log
    env.no_calls()


def test_missing_service_file_is_not_other(env):
    """The service file gone, and "other" letting everyone in (as
    Debian's does, through common-auth): libpam would answer 235."""
    env.use_pam()
    rewrite(svc(env, "other"), PERMIT)
    os.unlink(svc(env, env.pam["service"]))
    c = env.start()
    c.ehlo()
    expect_unavailable(env, c, "no PAM service file smtpauthd-test")
    assert env.backend_calls() == 0


def test_include_of_a_missing_file(env):
    """What the RHEL file does on Debian: an include that names nothing
    leaves libpam an empty stack, "Permission denied", once a 535."""
    env.use_pam()
    path = svc(env, env.pam["service"])
    rewrite(path, "auth include password-auth\n"
                  "account include password-auth\n")
    c = env.start()
    c.ehlo()
    expect_unavailable(env, c, "includes password-auth, which does not exist")


def prepend(env, line):
    """The test service file with line first."""
    path = svc(env, env.pam["service"])
    with open(path) as f:
        text = f.read()
    rewrite(path, line + "\n" + text)


@pytest.mark.parametrize("line,problem", [
    ("@include common-nosuch", "includes common-nosuch, which does not exist"),
    ("auth requisite pam_nosuch_module.so",
     "module pam_nosuch_module.so not found"),
], ids=["at-include", "module"])
def test_broken_piece_before_the_stack(env, line, problem):
    """A line before the working stack names a missing piece: nothing of
    the stack runs (PAM is not even started)."""
    env.use_pam()
    prepend(env, line)
    c = env.start()
    c.ehlo()
    expect_unavailable(env, c, problem)
    assert env.backend_calls() == 0


def test_dash_type_module_may_be_missing(env):
    """libpam skips a "-auth" line whose module is missing: so do we."""
    env.use_pam()
    prepend(env, "-auth optional pam_nosuch_module.so")
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 235, "2.7.0")


def test_substack_and_include_that_exist(env):
    """A stack split over files, as Debian (@include) and RHEL (include,
    substack) write them, works when every piece is there."""
    env.use_pam()
    path = svc(env, env.pam["service"])
    with open(path) as f:
        lines = f.read().splitlines(True)
    auth = [l for l in lines if l.startswith("auth")]
    account = [l for l in lines if l.startswith("account")]
    rewrite(svc(env, "common-auth-t"), "".join(auth))
    rewrite(svc(env, "account-t"), "".join(account))
    # Absolute names: pam_wrapper moves the service file only, and its
    # libpam looks for a relative include in /etc/pam.d.
    rewrite(path, "# split\n@include %s\n"
                  "account   [success=ok default=ignore]   pam_permit.so\n"
                  "account substack %s\n" % (svc(env, "common-auth-t"),
                                              svc(env, "account-t")))
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", "wrong"), 535, "5.7.8")
    check(c.auth_plain("alice", ALICE), 235, "2.7.0")
    assert env.backend_calls() == 2


@pytest.mark.parametrize("ret", ["authtok_expired", "new_authtok_reqd"])
def test_expired_password_codes(env, ret):
    env.use_pam(acct_ret=ret)
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 535, "5.7.8")
    ev = auth_events(c.log)
    assert [e["reason"] for e in ev] == ["password-expired"], c.log


# ---------------------------------------------------------------- -t

def t_check(env):
    path = env.write_config()
    r = env.run(["-t", "-f", path])
    return r.returncode, r.stderr.decode(errors="replace")


def test_t_good_stack(env):
    env.use_pam()
    rc, err = t_check(env)
    assert rc == 0, err


@pytest.mark.parametrize("text,problem", [
    ("auth include password-auth\n",
     "includes password-auth, which does not exist"),
    ("@include common-nosuch\n", "includes common-nosuch, which does not exist"),
    ("auth required pam_nosuch_module.so\n",
     "module pam_nosuch_module.so not found"),
    ("auth required /nonexistent/pam_x.so\n",
     "module /nonexistent/pam_x.so not found"),
    ("auht required pam_permit.so\n", 'unknown type "auht"'),
    ("auth required\n", "a line needs a control and a module"),
    ("auth [success=ok pam_permit.so\n", "unclosed ["),
    ("@include self\n", "nested more than"),
], ids=["include", "at-include", "module", "module-path", "type", "short",
        "bracket", "loop"])
def test_t_reports_a_broken_stack(env, text, problem):
    env.use_pam()
    rewrite(svc(env, "self"), "@include self\n")
    path = svc(env, env.pam["service"])
    with open(path) as f:
        good = f.read()
    rewrite(path, good + text)
    rc, err = t_check(env)
    assert rc == 78, err
    assert "pam-service smtpauthd-test: " in err and problem in err, err


def test_t_missing_service(env):
    env.use_pam()
    os.unlink(svc(env, env.pam["service"]))
    rc, err = t_check(env)
    assert rc == 78, err
    assert "no PAM service file smtpauthd-test" in err, err


def test_t_continued_line_and_comments(env):
    """A backslash continues a line; # starts a comment anywhere."""
    env.use_pam()
    path = svc(env, env.pam["service"])
    with open(path) as f:
        good = f.read()
    rewrite(path, "# auth required pam_nosuch.so\n"
                  "auth optional \\\n  pam_permit.so  # pam_nosuch.so\n" + good)
    rc, err = t_check(env)
    assert rc == 0, err


# ---------------------------------------------------------------- empty stacks

@pytest.mark.parametrize("text,missing", [
    # no auth line at all
    ("account required pam_permit.so\n", "auth"),
    # an include takes only its own type's lines: X has no auth line
    ("auth include {other_t}\naccount required pam_permit.so\n", "auth"),
    ("auth required pam_permit.so\n", "account"),
    # a "-auth" line whose module is missing is no module
    ("-auth optional pam_nosuch_module.so\naccount required pam_permit.so\n",
     "auth"),
], ids=["no-auth", "include-of-other-type", "no-account", "dash-only"])
def test_empty_stack_is_not_other(env, text, missing):
    """A stack with no module of its own is not a refusal: libpam runs
    the "other" service's in its place (common-auth on Debian: every
    account gets in).  Here "other" lets everyone in, as a wrong password
    did once (235)."""
    env.use_pam()
    rewrite(svc(env, "other"), PERMIT)
    rewrite(svc(env, "account-only"), "account required pam_permit.so\n")
    rewrite(svc(env, env.pam["service"]),
            text.format(other_t=svc(env, "account-only")))
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", "not-her-password"), 454, "4.7.0")
    assert "no %s module in its stack" % missing in c.log, c.log
    rc, err = t_check(env)
    assert rc == 78 and "no %s module in its stack" % missing in err, err


def test_misspelt_control(env):
    """libpam takes an unknown control as "bad" for every result: every
    user refused as if the password were wrong, and fail2ban banning
    them.  454 instead, and -t names the line."""
    env.use_pam()
    prepend(env, "auth requried pam_permit.so")
    c = env.start()
    c.ehlo()
    expect_unavailable(env, c, 'unknown control "requried"')
    rc, err = t_check(env)
    assert rc == 78 and 'unknown control "requried"' in err, err


@pytest.mark.parametrize("control", [
    "[success=ok default=ignore]", "[success=1 default=ignore]",
    "[user_unknown=ignore success=ok default=bad]", "REQUIRED", "Optional"])
def test_valid_controls(env, control):
    env.use_pam()
    prepend(env, "auth %s pam_permit.so" % control)
    rc, err = t_check(env)
    assert rc == 0, err


@pytest.mark.parametrize("control", ["[success=maybe]", "[]", "[=ok]",
                                     "[success]", "sufficent"])
def test_invalid_controls(env, control):
    env.use_pam()
    prepend(env, "auth %s pam_permit.so" % control)
    rc, err = t_check(env)
    assert rc == 78 and "unknown control" in err, err


def test_include_in_capitals_is_followed(env):
    """libpam reads "Include" as include: so is it followed here."""
    env.use_pam()
    prepend(env, "auth Include %s" % svc(env, "nosuch-file"))
    rc, err = t_check(env)
    assert rc == 78 and "which does not exist" in err, err


def test_wrapper_variables_without_the_wrapper(env):
    """PAM_WRAPPER's variables count only where pam_wrapper is loaded: in
    an environment that merely sets them, a service that exists only in
    their directory is still missing, as it is for the real libpam."""
    d = os.path.join(env.dir, "fake-pam.d")
    os.mkdir(d)
    rewrite(os.path.join(d, "smtpauthd-fake"), PERMIT)
    path = env.write_config({"auth": "pam", "pam-service": "smtpauthd-fake"})
    r = env.stage.run(["-t", "-f", path], environ={
        "PAM_WRAPPER": "1", "PAM_WRAPPER_SERVICE_DIR": d})
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 78, err
    assert "no PAM service file smtpauthd-fake" in err, err
