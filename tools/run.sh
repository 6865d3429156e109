#!/bin/sh
# run.sh - what `make run` does after building: serve a demo smtpauthd on
# 127.0.0.1:2525 (PORT=... to change), with a password file holding one
# user, you, and a random password that it prints.
#
#   sh tools/run.sh          set up run/ (once) and serve, until Ctrl-C
#   sh tools/run.sh --deps   install the missing packages to build and run
#                            it (as root, with apt-get) or print the
#                            command that would (tools/deps.sh build run)
#
# run/ holds passwd (user:hash, 0600), password (the clear text, 0600, so
# that a later run can show it again), cert.pem and key.pem (self-signed,
# for localhost), smtpauthd.conf and, without an MTA, mail/ (the messages
# tools/run-sendmail kept).  rm -rf run/ starts afresh.  The MTA's
# /usr/sbin/sendmail is used when there is one, tools/run-sendmail
# otherwise; SENDMAIL=/path/to/sendmail, when run/ is set up, names another
# (SENDMAIL=$PWD/tools/run-sendmail keeps the messages on a host with an MTA).
#
# AUTH is offered only inside TLS, as in production; the certificate is
# self-signed, so clients must be told not to verify it (swaks does not).

set -eu

say() {
	printf '%s\n' "$*"
}

die() {
	printf 'run.sh: %s\n' "$*" >&2
	exit 1
}

# ---- --deps: the packages needed to build and run: tools/packages ----

deps() {
	exec sh tools/deps.sh build run
}

# ---- the demo ----

# The account to log in as: you.  But run as root, smtpauthd switches to
# the authenticated user to run sendmail and never does so for root, so
# then take the user sudo came from, or else "nobody".
pick_user() {
	user=$(id -un)
	[ "$(id -u)" = 0 ] || return 0
	if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] &&
	    uid=$(id -u -- "$SUDO_USER" 2>/dev/null) && [ "$uid" != 0 ]; then
		user=$SUDO_USER
	elif id -u nobody >/dev/null 2>&1; then
		user=nobody
	else
		die "running as root, and no unprivileged account to run sendmail as"
	fi
	as_root_note=yes
}

# Run as root with tools/run-sendmail: let $user, whom sendmail runs as,
# reach the program and write run/mail/.
share_mail_dir() {
	chmod 0711 run
	mkdir -p run/mail
	chown -- "$user" run/mail
	chmod 0700 run/mail
	# shellcheck disable=SC2016 # $1 is expanded by the inner sh
	if command -v runuser >/dev/null 2>&1 &&
	    ! runuser -u "$user" -- sh -c \
	    'test -x "$1/tools/run-sendmail" && test -w "$1/run/mail"' \
	    sh "$PWD"; then
		say "run.sh: warning: $user cannot run $PWD/tools/run-sendmail"
		say "run.sh: or write $PWD/run/mail (a directory above not"
		say "run.sh: searchable by others?): messages will get 451"
	fi
}

# Print ${1}'s value as a shell word that a user can paste.
quote() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

setup_password() {
	# 16 characters from /dev/urandom, letters and digits only, so that
	# the password needs no quoting anywhere.
	pw=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' |
		cut -c 1-16)
	[ "${#pw}" -eq 16 ] || die "could not make a password"
	hash=$(printf '%s\n' "$pw" | ./smtpauthd -H) ||
		die "./smtpauthd -H failed"
	case $hash in
	'$'*) ;;
	*) die "./smtpauthd -H printed no crypt(3) hash: $hash" ;;
	esac
	rm -f run/passwd run/password
	printf '%s:%s\n' "$user" "$hash" >run/passwd
	printf '%s\n' "$pw" >run/password
	chmod 0600 run/passwd run/password
}

setup_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-days 825 -subj /CN=localhost \
		-addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout run/key.pem -out run/cert.pem 2>/dev/null ||
		die "openssl could not make a certificate"
	chmod 0600 run/key.pem
	chmod 0644 run/cert.pem
}

setup_conf() {
	if [ -n "${SENDMAIL:-}" ]; then
		sendmail=$SENDMAIL
	elif [ -x /usr/sbin/sendmail ]; then
		sendmail=/usr/sbin/sendmail
	else
		sendmail=$PWD/tools/run-sendmail
	fi
	cat >run/smtpauthd.conf <<EOF
# smtpauthd.conf for \`make run\`, written once by tools/run.sh
# (delete run/ to have it written again).  See smtpauthd.conf.example.
# tls starttls is the default once tls-cert is set; the 2465 listener
# adds -o tls=implicit.
auth file
passwd-file $PWD/run/passwd
tls-cert $PWD/run/cert.pem
tls-key $PWD/run/key.pem
auth-failure-delay 2
hostname localhost
sendmail $sendmail
# The limits on guessing remember in here, not in /var/lib/smtpauthd.
state sqlite:$PWD/run/state.db
EOF
	chmod 0600 run/smtpauthd.conf
}

run() {
	[ -x ./smtpauthd ] || die "no ./smtpauthd: build it first (make)"
	command -v systemd-socket-activate >/dev/null 2>&1 ||
		die "no systemd-socket-activate (Debian: apt-get install systemd)"
	port=${PORT:-2525}
	tls_port=${TLS_PORT:-2465}
	check_port PORT "$port"
	check_port TLS_PORT "$tls_port"
	command -v openssl >/dev/null 2>&1 ||
		die "no openssl (Debian: apt-get install openssl)"
	as_root_note=''
	pick_user
	# Run as root, smtpauthd confines its network side as this user.
	if [ "$(id -u)" = 0 ] && ! getent passwd smtpauthd >/dev/null; then
		useradd --system --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin smtpauthd ||
			die "could not create the user smtpauthd (privsep-user)"
		say "run.sh: created the system user smtpauthd (privsep-user)"
	fi

	umask 077
	mkdir -p run
	if [ ! -s run/password ] || [ ! -s run/passwd ] ||
	    ! grep -q "^$user:" run/passwd; then
		setup_password
		say "run.sh: made run/passwd with a new password for $user"
	fi
	pw=$(cat run/password)
	if [ ! -s run/cert.pem ] || [ ! -s run/key.pem ]; then
		setup_cert
	fi
	# A configuration from before TLS came is written anew.
	grep -q '^tls-cert' run/smtpauthd.conf 2>/dev/null || setup_conf
	sendmail=$(sed -n 's/^sendmail[[:space:]][[:space:]]*//p' \
		run/smtpauthd.conf | tail -n 1)
	case $as_root_note$sendmail in
	yes*/tools/run-sendmail) share_mail_dir ;;
	esac
	./smtpauthd -t -f "$PWD/run/smtpauthd.conf" ||
		die "run/smtpauthd.conf has problems (above); rm -rf run/ to start afresh"

	say ""
	say "smtpauthd demo on 127.0.0.1:$port (STARTTLS) and" \
	    "127.0.0.1:$tls_port (implicit TLS)"
	say ""
	say "  user:      $user"
	say "  password:  $pw          (kept in run/password)"
	say ""
	if [ -n "$as_root_note" ]; then
		say "  (run as root: smtpauthd hands mail to sendmail as the"
		say "  authenticated user, never as root, so the demo user is $user)"
		say ""
	fi
	say "  AUTH is offered only inside TLS.  The certificate, run/cert.pem,"
	say "  is self-signed for localhost: clients must not verify it, or"
	say "  must be given it as their CA file."
	say ""
	case $sendmail in
	*/tools/run-sendmail)
		say "  sendmail:  $sendmail"
		say "             no MTA here: nothing is delivered; each message"
		say "             is kept in $PWD/run/mail/ (.eml, and .argv)"
		;;
	*)
		say "  sendmail:  $sendmail"
		say "             the local MTA delivers for real; $user@localhost"
		say "             is your local mailbox"
		;;
	esac
	say ""
	say "Try it, in another terminal:"
	say ""
	say "  swaks --server 127.0.0.1:$port --tls --auth PLAIN" \
	    "--auth-user $(quote "$user") --auth-password $(quote "$pw")" \
	    "--from $(quote "$user@localhost") --to $(quote "$user@localhost")"
	say "  swaks --server 127.0.0.1:$tls_port --tlsc --auth PLAIN" \
	    "--auth-user $(quote "$user") --auth-password $(quote "$pw")" \
	    "--from $(quote "$user@localhost") --to $(quote "$user@localhost")"
	say ""
	say "To authenticate through PAM instead (Unix accounts and passwords):"
	say "  as root: install -m 0644 pam.d/smtpauthd /etc/pam.d/smtpauthd"
	say "           (Red Hat: pam.d/smtpauthd.rhel)"
	say "  then put \"auth pam\" in run/smtpauthd.conf.  Run as root, any"
	say "  account but root can log in and send; run as a user, pam_unix"
	say "  checks only that user's own password."
	say ""
	say "Logs follow here (smtpauthd -d).  Ctrl-C stops."
	say ""
	systemd-socket-activate -l "127.0.0.1:$tls_port" --inetd \
		-a "$PWD/smtpauthd" -d -f "$PWD/run/smtpauthd.conf" \
		-o tls=implicit &
	implicit_pid=$!
	systemd-socket-activate -l "127.0.0.1:$port" --inetd \
		-a "$PWD/smtpauthd" -d -f "$PWD/run/smtpauthd.conf" &
	starttls_pid=$!
	trap 'kill "$implicit_pid" "$starttls_pid" 2>/dev/null' EXIT
	trap 'exit 0' INT TERM
	# Either listener ending (a port in use, say) ends the demo.
	while kill -0 "$implicit_pid" 2>/dev/null &&
	    kill -0 "$starttls_pid" 2>/dev/null; do
		sleep 1
	done
	die "a listener stopped (is port $port or $tls_port in use?)"
}

check_port() {
	case $2 in
	'' | *[!0-9]*) die "$1 must be a number, not \"$2\"" ;;
	esac
	if [ "${#2}" -gt 5 ] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
		die "$1 must be from 1 to 65535"
	fi
}

# Work from the top of the repository, where make runs us anyway.
self=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)/$(basename -- "$0")
cd -- "$(dirname -- "$self")/.."

case ${1:-} in
--deps) deps ;;
'') run ;;
-h | --help)
	sed -n '2,22s/^# \{0,1\}//p' "$self"
	;;
*) die "usage: sh tools/run.sh [--deps]" ;;
esac
