# smtpauthd - authenticated SMTP submission, one process per connection.
#
#   make            the program (and its ASan+UBSan twin, smtpauthd-asan)
#   make check      unit and protocol tests against both builds
#   make run        a demo on 127.0.0.1:2525 (installs what is missing)
#   make bench      the benchmarks in bench/ (by hand, never in check)
#   make fuzz       every libFuzzer target in tests/fuzz/ for FUZZ_SECONDS each
#   make check-valgrind  the protocol tests against smtpauthd under valgrind
#   make lint       cppcheck, clang-tidy and scan-build, warnings as errors
#   make install    PREFIX, DESTDIR, SBINDIR, MANDIR, SYSCONFDIR honoured
#                   (and UNITDIR, PAM...: see make install below)
#   make install-strip  the same with the binary stripped

PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
PYTHON     ?= /usr/bin/python3

CC       ?= cc
WARN      = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
            -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wvla
HARDEN    = -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
# Where libpam loads modules named without a path (pamstack.c checks them).
PAM_MODULE_DIR ?= $(shell pkg-config --variable=libdir pam 2>/dev/null || echo /lib)/security
WARN     += -DPAM_MODULE_DIR='"$(PAM_MODULE_DIR)"'
CFLAGS   ?= -O2 -g
LDHARDEN  = -pie -Wl,-z,relro,-z,now
LIBS      = -lpam -lcrypt -lssl -lcrypto -lseccomp -lsqlite3 -lhiredis
SANITIZE  = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
            -fno-omit-frame-pointer -fPIE

SRCS = smtpauthd.c smtp.c io.c tls.c auth.c pamstack.c relay.c conf.c data.c \
       addr.c privsep.c chan.c monitor.c sandbox.c authproc.c prefix.c \
       state.c state_sqlite.c state_redis.c limits.c sending.c header.c map.c \
       policy.c policy_client.c proctitle.c msgid.c proxy.c
HDRS = smtpauthd.h state.h chan.h policy.h policy_client.h proxy.h
OBJS = $(SRCS:%.c=build/%.o)
ASAN_OBJS = $(SRCS:%.c=build/asan/%.o)
# Everything but main(), for the unit tests.
LIB_OBJS = $(filter-out build/smtpauthd.o,$(OBJS)) build/smtpauthd-nomain.o
ASAN_LIB_OBJS = $(filter-out build/asan/smtpauthd.o,$(ASAN_OBJS)) \
            build/asan/smtpauthd-nomain.o

TEST_PROGS = tests/unit tests/unit-asan tests/capture-sendmail \
            tests/pam_counter.so tests/monitor-probe tests/monitor-probe-asan \
            tests/state-probe tests/policy-query tests/policy-query-asan

all: smtpauthd smtpauthd-asan

smtpauthd: $(OBJS)
	$(CC) $(LDHARDEN) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

smtpauthd-asan: $(ASAN_OBJS)
	$(CC) $(SANITIZE) -pie -o $@ $(ASAN_OBJS) $(LIBS)

# Each object rule makes its own directory: make lint and make fuzz create
# build/ first, so an order-only "build" target would be taken as done.
build/%.o: %.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) -c -o $@ $<

build/asan/%.o: %.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(SANITIZE) -c -o $@ $<

# The unit tests call main()'s neighbours (logging, helpers) directly.
build/smtpauthd-nomain.o: build/smtpauthd.o
	objcopy --redefine-sym main=smtpauthd_main $< $@
build/asan/smtpauthd-nomain.o: build/asan/smtpauthd.o
	objcopy --redefine-sym main=smtpauthd_main $< $@

tests/unit: tests/unit.c $(LIB_OBJS) $(HDRS)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) -I. $(LDHARDEN) -o $@ tests/unit.c \
	    $(LIB_OBJS) $(LIBS)

tests/unit-asan: tests/unit.c $(ASAN_LIB_OBJS) $(HDRS)
	$(CC) $(WARN) $(SANITIZE) -I. -pie -o $@ tests/unit.c \
	    $(ASAN_LIB_OBJS) $(LIBS)

tests/monitor-probe: tests/monitor-probe.c $(LIB_OBJS) $(HDRS)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) -I. $(LDHARDEN) -o $@ \
	    tests/monitor-probe.c $(LIB_OBJS) $(LIBS)

tests/monitor-probe-asan: tests/monitor-probe.c $(ASAN_LIB_OBJS) $(HDRS)
	$(CC) $(WARN) $(SANITIZE) -I. -pie -o $@ tests/monitor-probe.c \
	    $(ASAN_LIB_OBJS) $(LIBS)

tests/state-probe: tests/state-probe.c $(LIB_OBJS) $(HDRS)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) -I. $(LDHARDEN) -o $@ \
	    tests/state-probe.c $(LIB_OBJS) $(LIBS)

tests/policy-query: tests/policy-query.c $(LIB_OBJS) $(HDRS)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) -I. $(LDHARDEN) -o $@ \
	    tests/policy-query.c $(LIB_OBJS) $(LIBS)

tests/policy-query-asan: tests/policy-query.c $(ASAN_LIB_OBJS) $(HDRS)
	$(CC) $(WARN) $(SANITIZE) -I. -pie -o $@ tests/policy-query.c \
	    $(ASAN_LIB_OBJS) $(LIBS)

tests/capture-sendmail: tests/capture-sendmail.c
	$(CC) $(WARN) $(CFLAGS) -o $@ $<

tests/pam_counter.so: tests/pam_counter.c
	$(CC) $(WARN) $(CFLAGS) -fPIC -shared -o $@ $< -lpam

# The packages come first (tools/packages, through tools/deps.sh): as root
# on Debian the missing ones are installed, otherwise the apt-get line to
# run is printed and nothing is built or tested.
check:
	sh tools/deps.sh build run test
	$(MAKE) --no-print-directory all $(TEST_PROGS)
	$(PYTHON) tests/run_checks.py

bench: all
	$(MAKE) -C bench

# For bench/Makefile: the objects of the shipped build, whole paths.
print-objs:
	@echo $(OBJS:%=$(CURDIR)/%)

print-libs:
	@echo $(LIBS)

# ---- fuzzing: libFuzzer targets in tests/fuzz/, each calling the real code ----
# The program's sources are built again with clang, ASan and UBSan and the
# fuzzer's coverage hooks (build/fuzz/); main() is renamed as for the unit
# tests.  `make fuzz` runs each target for FUZZ_SECONDS, replaying its
# checked-in corpus (tests/fuzz/corpus/TARGET) first; see tests/fuzz/run.sh.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS    = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
            -fno-omit-frame-pointer
FUZZ_TARGETS  = io addr auth data conf session header policy proxy
FUZZ_OBJS     = $(SRCS:%.c=build/fuzz/%.o)
FUZZ_LIB_OBJS = $(filter-out build/fuzz/smtpauthd.o,$(FUZZ_OBJS)) \
            build/fuzz/smtpauthd-nomain.o
FUZZ_BINS     = $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)

build/fuzz/%.o: %.c $(HDRS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(WARN) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/smtpauthd-nomain.o: build/fuzz/smtpauthd.o
	objcopy --redefine-sym main=smtpauthd_main $< $@

# The harness itself gets the sanitizers but no coverage hooks: its own
# checks are not what the fuzzer should steer by, and cost executions.
build/fuzz/fuzz_%.o: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(HDRS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(WARN) $(FUZZ_FLAGS) -c -o $@ $<

build/fuzz/fuzz_%: build/fuzz/fuzz_%.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB_OBJS) \
	    $(LIBS)

# Keep the objects: they are shared by all targets.
.SECONDARY: $(FUZZ_OBJS) build/fuzz/smtpauthd-nomain.o \
            $(FUZZ_TARGETS:%=build/fuzz/fuzz_%.o)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	sh tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# ---- the protocol tests under valgrind (see tests/valgrind/run.sh) ----
# Deselected: the tests that look for the session's seccomp filter, which
# the session does not install under valgrind (valgrind's own system calls
# would meet it; see privsep.c), and the one that compares the answer
# times of failed logins, which valgrind's slowdown (about 20x) blurs; and
# the process title's, since under valgrind the process is valgrind's.
# Also left out, as adding nothing there: the store's cases that drive
# tests/state-probe and never start smtpauthd, the HAProxy case that
# repeats test_proxy's with another client, and the -t and start-up checks
# of logging and of a bad prefix (the first messages of a process).
VALGRIND_DESELECT ?= test_session_confined or test_two_processes_over_tcp \
            or test_sendmail_as_user_through_the_monitor \
            or test_session_death_as_root or test_seccomp_kill_is_reported \
            or test_tls_in_the_session or test_failures_answer_alike \
            or test_guesses_at_once_are_counted_before_their_checks \
            or test_process_title_after_auth \
            or (test_store and not test_two_hosts and not test_redis_down \
                and not test_redis_wrong) \
            or test_through_haproxy_v1_and_v2 or test_t_refuses_a_bad_prefix \
            or test_no_syslog_is_said_once_on_stderr \
            or test_t_warns_without_dev_log

check-valgrind: smtpauthd tests/capture-sendmail tests/pam_counter.so \
	    tests/state-probe tests/policy-query
	DESELECT='$(VALGRIND_DESELECT)' PYTHON=$(PYTHON) sh tests/valgrind/run.sh

# ---- static analysis: cppcheck, clang-tidy (.clang-tidy), scan-build ----
# Warnings are errors.  Exceptions sit at their line with a reason
# (cppcheck-suppress, NOLINT).  cppcheck's variableScope is off: declaring
# at the top of a function is this code's style (KNF), not a defect.
# The *Called checks ask for reentrant variants: each process here is
# single-threaded.
CPPCHECK_FLAGS = --enable=warning,style,performance,portability \
            --library=posix --std=c11 -D_GNU_SOURCE --inline-suppr \
            --error-exitcode=1 --quiet --suppress=missingIncludeSystem \
            --suppress=variableScope --suppress=getpwnamCalled \
            --suppress=getpwuidCalled --suppress=readdirCalled

lint: lint-cppcheck lint-clang-tidy lint-scan-build

lint-cppcheck:
	cppcheck $(CPPCHECK_FLAGS) $(SRCS)

lint-clang-tidy:
	clang-tidy --quiet $(SRCS) -- $(WARN) -I.

# scan-build wraps a compile of every source into build/lint/ (CC is its
# analyzer wrapper there), so the normal objects are not touched.
LINT_OBJS = $(SRCS:%.c=build/lint/%.o)

build/lint/%.o: %.c $(HDRS)
	@mkdir -p build/lint
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) -c -o $@ $<

lint-objs: $(LINT_OBJS)

lint-scan-build:
	rm -rf build/lint build/scan-build
	scan-build --status-bugs -o build/scan-build $(MAKE) --no-print-directory lint-objs

run:
	sh tools/deps.sh build run
	$(MAKE) all
	sh tools/run.sh

# ---- make install, make uninstall ----
# Honoured: DESTDIR, PREFIX, SBINDIR, MANDIR, SYSCONFDIR, and
#   UNITDIR    the systemd units (systemd reads /usr/local/lib/systemd/system
#              too; packages use UNITDIR=/usr/lib/systemd/system)
#   SYSUSERSDIR, TMPFILESDIR  the unit directory's siblings: the privsep
#              user for systemd-sysusers and the directories for
#              systemd-tmpfiles, both as smtpauthd.conf, so that a package
#              built with DESTDIR gets them made on the system it lands on
#   XINETDDIR  the xinetd entry;  PAMDIR  the PAM service file
#   FAIL2BANDIR  fail2ban's configuration: the filter and the jail (disabled)
#              of contrib/fail2ban go into its filter.d and jail.d, only
#              when $(DESTDIR)$(FAIL2BANDIR) exists (fail2ban is installed)
#   DOCDIR     smtpauthd.conf.example, for reference
#   PAM        which PAM service file: debian (pam.d/smtpauthd), rhel
#              (pam.d/smtpauthd.rhel), or auto: rhel when password-auth is
#              in /etc/pam.d or in $(DESTDIR)$(PAMDIR), else debian
# SYSCONFDIR, XINETDDIR and PAMDIR say where the files go, not where they
# are read: smtpauthd reads /etc/smtpauthd.conf (-f names another), PAM
# /etc/pam.d (or /usr/lib/pam.d), xinetd /etc/xinetd.d.
# What is under SYSCONFDIR belongs to the administrator once there: the PAM
# file, smtpauthd.conf (the example: every key commented out, at its
# default), the xinetd entry and the fail2ban jail (both installed disabled)
# and filter are installed only when absent, and make uninstall leaves them, as it leaves the privsep-user.
# The units and the xinetd entry name $(SBINDIR)/smtpauthd, and the man
# pages the paths they were installed to.  Nothing is
# enabled or started: the last lines of make install say how.
# make install-strip (automake's name) installs the binary stripped of its
# symbols and debugging information, with $(STRIP); make install installs
# it as built, for packagers who split the debugging information out.
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
STRIP      ?= strip
XINETDDIR  ?= $(SYSCONFDIR)/xinetd.d
PAMDIR     ?= $(SYSCONFDIR)/pam.d
FAIL2BANDIR ?= $(SYSCONFDIR)/fail2ban
DOCDIR     ?= $(PREFIX)/share/doc/smtpauthd
PAM        ?= auto

UNITS = smtpauthd.socket smtpauthd@.service smtpauthd-smtps.socket \
            smtpauthd-smtps@.service
# The path of the binary in the units and the xinetd entry as shipped.
SBIN_SHIPPED = /usr/local/sbin/smtpauthd
SBIN_SED = sed 's|$(SBIN_SHIPPED)|$(SBINDIR)/smtpauthd|g'
# The man pages say where make install puts things with its defaults; as
# installed they say where it put them.
MAN_SED = sed -e 's|$(SBIN_SHIPPED)|$(SBINDIR)/smtpauthd|g' \
            -e 's|/usr/local/lib/systemd/system|$(UNITDIR)|g' \
            -e 's|/usr/local/lib/sysusers\.d|$(SYSUSERSDIR)|g' \
            -e 's|/usr/local/lib/tmpfiles\.d|$(TMPFILESDIR)|g' \
            -e 's|/usr/local/share/doc/smtpauthd|$(DOCDIR)|g' \
            -e 's|PREFIX=/usr/local|PREFIX=$(PREFIX)|g'
# $(call install_new,SOURCE,TARGET): SOURCE as TARGET (mode 0644) unless
# TARGET exists (a dangling symbolic link included).
install_new = if [ -e '$(2)' ] || [ -L '$(2)' ]; then \
	    echo "install: kept $(2): it exists (see $(1))"; \
	else \
	    echo "install -m 644 $(1) $(2)"; install -m 644 $(1) '$(2)'; \
	fi

# The paths go unquoted through the shell and into sed and the units'
# ExecStart=, so blanks and the characters the shell or sed would take as
# their own are refused before anything is written.
empty :=
space := $(empty) $(empty)
tab := $(empty)	$(empty)
INSTALL_PATHS_GIVEN = $(DESTDIR):$(PREFIX):$(SBINDIR):$(MANDIR):$(DOCDIR):$(UNITDIR):$(SYSCONFDIR):$(PAMDIR):$(XINETDDIR):$(FAIL2BANDIR):$(SYSUSERSDIR):$(TMPFILESDIR):$(STRIP)
install_path_bad = $(if $(findstring $(space),$(INSTALL_PATHS_GIVEN)),blank)$(if $(findstring $(tab),$(INSTALL_PATHS_GIVEN)),tab)$(foreach c,' " | & ; $$ \ `,$(findstring $(c),$(INSTALL_PATHS_GIVEN)))
check_install_paths = $(if $(strip $(install_path_bad)),$(error make $@: a path with a blank or one of ' " | & ; $$ \ ` is not supported))

install: smtpauthd
	@$(check_install_paths)
	@case '$(PAM)' in auto|debian|rhel) ;; \
	*) echo "make install: PAM=$(PAM): auto, debian or rhel" >&2; \
	    exit 2 ;; esac
	@# Only missing directories are made: install -d would reset the mode
	@# of an existing one (/etc included).
	@for d in $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7 \
	    $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCONFDIR) $(DESTDIR)$(PAMDIR) \
	    $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR); do \
	    [ -d "$$d" ] || { echo "install -d $$d"; install -d "$$d"; } || exit 1; \
	done
	install -m 755 $(INSTALL_STRIP) smtpauthd $(DESTDIR)$(SBINDIR)/smtpauthd
	@set -e; for m in man8/smtpauthd.8 man5/smtpauthd.conf.5 \
	    man7/smtpauthd-setup.7; do \
	    echo "$(MAN_SED) man/$${m#*/} > $(DESTDIR)$(MANDIR)/$$m"; \
	    $(MAN_SED) man/$${m#*/} > '$(DESTDIR)$(MANDIR)'/$$m; \
	    chmod 644 '$(DESTDIR)$(MANDIR)'/$$m; \
	done
	install -m 644 systemd/smtpauthd.sysusers \
	    $(DESTDIR)$(SYSUSERSDIR)/smtpauthd.conf
	install -m 644 systemd/smtpauthd.tmpfiles \
	    $(DESTDIR)$(TMPFILESDIR)/smtpauthd.conf
	install -m 644 smtpauthd.conf.example \
	    $(DESTDIR)$(DOCDIR)/smtpauthd.conf.example
	@set -e; for u in $(UNITS); do \
	    echo "$(SBIN_SED) systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u"; \
	    $(SBIN_SED) systemd/$$u > '$(DESTDIR)$(UNITDIR)'/$$u; \
	    chmod 644 '$(DESTDIR)$(UNITDIR)'/$$u; \
	done
	@pam='$(PAM)'; \
	if [ "$$pam" = auto ]; then \
	    if [ -e /etc/pam.d/password-auth ] || \
	        [ -e '$(DESTDIR)$(PAMDIR)/password-auth' ]; then \
	        pam=rhel; else pam=debian; fi; \
	    echo "install: PAM=auto: $$pam"; \
	fi; \
	if [ "$$pam" = rhel ]; then src=pam.d/smtpauthd.rhel; \
	else src=pam.d/smtpauthd; fi; \
	$(call install_new,$$src,$(DESTDIR)$(PAMDIR)/smtpauthd)
	@$(call install_new,smtpauthd.conf.example,$(DESTDIR)$(SYSCONFDIR)/smtpauthd.conf)
	@# On a live system without xinetd, no /etc/xinetd.d is made for it.
	@set -e; x='$(DESTDIR)$(XINETDDIR)/smtpauthd'; \
	if [ -z "$(DESTDIR)" ] && [ ! -d '$(XINETDDIR)' ]; then \
	    echo "install: no $(XINETDDIR) (xinetd is not installed): skipped"; \
	elif [ -e "$$x" ] || [ -L "$$x" ]; then \
	    echo "install: kept $$x: it exists (see xinetd/smtpauthd)"; \
	else \
	    install -d '$(DESTDIR)$(XINETDDIR)'; \
	    echo "$(SBIN_SED) xinetd/smtpauthd > $$x"; \
	    $(SBIN_SED) xinetd/smtpauthd > "$$x"; chmod 644 "$$x"; \
	fi
	@# fail2ban's filter and jail, where fail2ban is (its directory exists).
	@set -e; f='$(DESTDIR)$(FAIL2BANDIR)'; \
	if [ ! -d "$$f" ]; then \
	    echo "install: no $$f (fail2ban is not installed): its filter and jail skipped"; \
	else \
	    for d in filter.d jail.d; do \
	        [ -d "$$f/$$d" ] || { echo "install -d $$f/$$d"; install -d "$$f/$$d"; }; \
	        t="$$f/$$d/smtpauthd.conf"; \
	        if [ -e "$$t" ] || [ -L "$$t" ]; then \
	            echo "install: kept $$t: it exists (see contrib/fail2ban/$$d)"; \
	        else \
	            echo "install -m 644 contrib/fail2ban/$$d/smtpauthd.conf $$t"; \
	            install -m 644 contrib/fail2ban/$$d/smtpauthd.conf "$$t"; \
	        fi; \
	    done; \
	fi
	@# The unprivileged user of the network-facing process (privsep-user):
	@# made on the live system only, never into a DESTDIR (there
	@# $(SYSUSERSDIR)/smtpauthd.conf says how to make it).
	@if [ -z "$(DESTDIR)" ] && ! getent passwd smtpauthd >/dev/null; then \
	    echo "useradd --system --no-create-home --home-dir /nonexistent" \
	        "--shell /usr/sbin/nologin smtpauthd"; \
	    useradd --system --no-create-home --home-dir /nonexistent \
	        --shell /usr/sbin/nologin smtpauthd; \
	fi
	@echo "install: done; nothing is enabled.  Set hostname (and tls-cert," \
	    "tls-key) in $(SYSCONFDIR)/smtpauthd.conf, check with smtpauthd -t, then:"
	@echo "    systemctl daemon-reload; systemctl enable --now" \
	    "smtpauthd.socket smtpauthd-smtps.socket"
	@if [ -e '$(DESTDIR)$(XINETDDIR)/smtpauthd' ]; then \
	    echo "  or set disable = no in $(XINETDDIR)/smtpauthd and reload" \
	        "xinetd."; fi

# The target-specific variable reaches install's recipe: no second make.
install-strip: INSTALL_STRIP = -s --strip-program=$(STRIP)
install-strip: install

# The units are not removed from under a running or enabled socket: that
# would leave systemd serving connections with a program that is gone.
uninstall:
	@$(check_install_paths)
	@x='$(XINETDDIR)/smtpauthd'; \
	if [ -z "$(DESTDIR)" ] && [ -f "$$x" ] && \
	    grep -Eq '^[[:space:]]*disable[[:space:]]*=[[:space:]]*no' "$$x"; then \
	    echo "make uninstall: $$x enables a service; first set" \
	        "disable = yes there and reload xinetd" >&2; \
	    exit 1; \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null; then \
	    for s in smtpauthd.socket smtpauthd-smtps.socket; do \
	        if systemctl -q is-enabled $$s 2>/dev/null || \
	            systemctl -q is-active $$s 2>/dev/null; then \
	            echo "make uninstall: $$s is enabled or active; first:" \
	                "systemctl disable --now $$s" >&2; \
	            exit 1; \
	        fi; \
	    done; \
	fi
	rm -f $(DESTDIR)$(SBINDIR)/smtpauthd \
	    $(DESTDIR)$(MANDIR)/man8/smtpauthd.8 \
	    $(DESTDIR)$(MANDIR)/man5/smtpauthd.conf.5 \
	    $(DESTDIR)$(MANDIR)/man7/smtpauthd-setup.7 \
	    $(DESTDIR)$(DOCDIR)/smtpauthd.conf.example \
	    $(DESTDIR)$(SYSUSERSDIR)/smtpauthd.conf \
	    $(DESTDIR)$(TMPFILESDIR)/smtpauthd.conf \
	    $(UNITS:%=$(DESTDIR)$(UNITDIR)/%)
	@if [ -d '$(DESTDIR)$(DOCDIR)' ]; then \
	    if rmdir '$(DESTDIR)$(DOCDIR)' 2>/dev/null; then \
	        echo "rmdir $(DESTDIR)$(DOCDIR)"; \
	    else echo "uninstall: left $(DESTDIR)$(DOCDIR): not empty"; fi; fi
	@for f in $(DESTDIR)$(PAMDIR)/smtpauthd \
	    $(DESTDIR)$(SYSCONFDIR)/smtpauthd.conf \
	    $(DESTDIR)$(XINETDDIR)/smtpauthd \
	    $(DESTDIR)$(FAIL2BANDIR)/filter.d/smtpauthd.conf \
	    $(DESTDIR)$(FAIL2BANDIR)/jail.d/smtpauthd.conf; do \
	    if [ -e "$$f" ] || [ -L "$$f" ]; then \
	        echo "uninstall: left $$f (yours now; rm -f $$f)"; fi; \
	done
	@if [ -z "$(DESTDIR)" ] && getent passwd smtpauthd >/dev/null; then \
	    echo "uninstall: left the user smtpauthd (userdel smtpauthd)"; fi

clean:
	rm -rf build smtpauthd smtpauthd-asan $(TEST_PROGS)

.PHONY: all check bench print-objs print-libs run install install-strip uninstall clean \
	fuzz fuzz-build \
	check-valgrind lint lint-cppcheck lint-clang-tidy lint-scan-build lint-objs
