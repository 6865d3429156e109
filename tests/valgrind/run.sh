#!/bin/sh
# tests/valgrind/run.sh - what `make check-valgrind` runs: the protocol test
# suite (tests/*.py, pytest) against the normal build of smtpauthd running
# under valgrind (memcheck, full leak check, children followed), then a scan
# of every valgrind log: any error, and any definitely lost block, fails.
#
# The tests copy the binary they are given into a directory of their own
# and may run it as nobody, so the wrapper they get is a script with
# absolute paths to a world-readable copy of the binary and to a
# world-writable log directory, both made here.
#
# Usage: run.sh [PYTEST-ARGS...]
# VALGRIND_TRACK_ORIGINS=yes adds --track-origins (slower; for reading a
# reported fault).  DESELECT (a pytest -k expression) leaves out the tests that measure time
# and cannot hold under valgrind's slowdown; the Makefile sets it.
set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
python=${PYTHON:-/usr/bin/python3}

if ! command -v valgrind >/dev/null 2>&1; then
	echo "check-valgrind: valgrind is not installed" >&2
	exit 1
fi
stage=$(mktemp -d /tmp/smtpauthd-valgrind.XXXXXX) || exit 1
# KEEP_TEST_DIRS=1 (as for the tests themselves) keeps the logs.
if [ -z "${KEEP_TEST_DIRS:-}" ]; then
	trap 'rm -rf "$stage"' EXIT
else
	echo "check-valgrind: keeping $stage"
fi
chmod 755 "$stage"
mkdir "$stage/logs"
chmod 1777 "$stage/logs"
cp smtpauthd "$stage/smtpauthd"
chmod 755 "$stage/smtpauthd"
cp tests/valgrind/pam_wrapper.supp "$stage/pam_wrapper.supp"
chmod 644 "$stage/pam_wrapper.supp"
track_origins=${VALGRIND_TRACK_ORIGINS:-no}
case $track_origins in
yes | no) ;;
*) echo "check-valgrind: VALGRIND_TRACK_ORIGINS must be yes or no" >&2
	exit 2 ;;
esac
sed -e "s|@BINARY@|$stage/smtpauthd|" -e "s|@LOGDIR@|$stage/logs|" \
    -e "s|@TRACK_ORIGINS@|$track_origins|" \
    -e "s|@SUPPRESSIONS@|$stage/pam_wrapper.supp|" \
    tests/valgrind/smtpauthd-valgrind.in >"$stage/smtpauthd-valgrind"
chmod 755 "$stage/smtpauthd-valgrind"

# Arguments go to pytest (e.g. -k NAME to run a few tests by hand).  The
# tests spend most of their time waiting on valgrind's start-up and on
# timers: VALGRIND_WORKERS pytest-xdist processes (default 3, whole files
# each, so that a module's fixtures stay in one process) share two cores
# better than one; 0 runs them in one process.
workers=${VALGRIND_WORKERS:-3}
case $workers in
'' | *[!0-9]*) echo "check-valgrind: VALGRIND_WORKERS must be a number" >&2
	exit 2 ;;
esac
if [ "$workers" -gt 0 ]; then
	set -- -n "$workers" --dist loadfile "$@"
fi
set -- -q -rfEs -p no:cacheprovider "$@"
if [ -n "${DESELECT:-}" ]; then
	set -- "$@" -k "not ($DESELECT)"
fi
echo "==> pytest tests/ against valgrind smtpauthd${DESELECT:+ (deselected: $DESELECT)}"
SMTPAUTHD="$stage/smtpauthd-valgrind" "$python" -m pytest "$@" tests/
rc=$?

# Every process's log: its ERROR SUMMARY must say 0 errors.
nlogs=0
bad=0
for log in "$stage"/logs/valgrind.*.log; do
	[ -e "$log" ] || continue
	nlogs=$((nlogs + 1))
	if grep -Eq 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]' "$log"; then
		bad=$((bad + 1))
		echo "--- $log:"
		cat "$log"
	fi
done
echo "==> valgrind: $nlogs process logs, $bad with errors or definite leaks"
if [ "$nlogs" -eq 0 ]; then
	echo "check-valgrind: no valgrind log at all: the wrapper did not run" >&2
	exit 1
fi
if [ $rc -ne 0 ] || [ $bad -ne 0 ]; then
	exit 1
fi
exit 0
