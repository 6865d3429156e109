#!/bin/sh
# deps.sh - make sure the Debian packages that a part of the work needs are
# installed: the one place where tools/packages (the list) is read.
#
#   sh tools/deps.sh PART...    PART: build, run, test, ci (see tools/packages)
#
# As root with apt-get, the missing packages are installed (no recommends;
# an apt-get update and a second try when the first install fails, as on a
# fresh machine whose package lists are empty).  Otherwise it prints the
# exact apt-get line to run as root and exits 1, before anything is built
# or tested.  Exit 0: everything is there.  SMTPAUTHD_NO_INSTALL=1 never
# installs, even as root (print and exit 1 instead).

set -eu

top=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd -P)
list=$top/tools/packages

say() {
	printf 'deps.sh: %s\n' "$*"
}

[ -r "$list" ] || { say "cannot read $list" >&2; exit 2; }
[ $# -gt 0 ] || { say "usage: sh tools/deps.sh PART..." >&2; exit 2; }
for part in "$@"; do
	case $part in
	build | run | test | ci) ;;
	*) say "unknown part \"$part\" (build, run, test, ci)" >&2; exit 2 ;;
	esac
done

# The package is present: its probe is found, or else dpkg has it.
present() {
	case ${2:-} in
	'') ;;
	/*) [ -e "$2" ] && return 0 ;;
	*) command -v "$2" >/dev/null 2>&1 && return 0 ;;
	esac
	command -v dpkg-query >/dev/null 2>&1 || return 1
	dpkg-query -W -f '${Status}\n' "$1" 2>/dev/null |
		grep -q '^install ok installed$'
}

# The missing packages of the parts asked for, one line each.
missing() {
	sed -e 's/#.*//' "$list" | while read -r part pkg probe; do
		[ -n "$part" ] || continue
		for want in "$@"; do
			[ "$part" = "$want" ] || continue
			present "$pkg" "${probe:-}" || printf '%s\n' "$pkg"
		done
	done
}

need=$(missing "$@" | tr '\n' ' ')
need=${need% }
if [ -z "$need" ]; then
	say "packages present ($*)"
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	say "not Debian?  Install the equivalents of: $need"
	exit 1
fi
if [ "$(id -u)" != 0 ] || [ -n "${SMTPAUTHD_NO_INSTALL:-}" ]; then
	say "missing packages ($*); as root, run:"
	printf '    apt-get install --no-install-recommends %s\n' "$need"
	exit 1
fi

say "installing $need"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # the list is split into package names
if ! apt-get install -y -q --no-install-recommends $need; then
	say "apt-get update, then again"
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $need
fi
left=$(missing "$@" | tr '\n' ' ')
if [ -n "$left" ]; then
	say "still missing after apt-get install: $left" >&2
	exit 1
fi
