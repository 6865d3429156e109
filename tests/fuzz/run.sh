#!/bin/sh
# tests/fuzz/run.sh - what `make fuzz` runs: each libFuzzer target in turn
# for SECONDS seconds, one at a time.  Usage: run.sh SECONDS TARGET...
#
# Each target first replays every input of its checked-in corpus
# (tests/fuzz/corpus/TARGET: the seeds and the regression inputs of bugs
# found), then mutates, keeping what it learns in build/fuzz/corpus/TARGET
# (not checked in; it carries over to the next run).  Any crash, leak,
# sanitizer report, failed check, timeout (10 s for one input) or memory
# blow-up (2 GiB) fails the run; the input is left in
# build/fuzz/artifacts/TARGET/ and the report's end is printed.
# Prints execs per target, and appends them to build/fuzz/execs.log.
# FUZZ_MAX_LEN overrides the longest input (shorter inputs run faster, but
# the corpus files longer than it are cut to it, even on replay).
set -u

seconds=$1
shift
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1

# ASan: leaks are errors (libFuzzer checks each input); UBSan: the first
# report is fatal (the build also has -fno-sanitize-recover=all).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Longest input per target: past each limit it guards, not much more.
max_len() {
	case $1 in
	io|session)	echo 34000 ;;	# input buffer 16384, AUTH line 12288
	auth)		echo 17000 ;;	# AUTH line 12288
	conf)		echo 4608 ;;	# config line 4096
	data)		echo 2500 ;;	# text line 1000
	addr)		echo 1024 ;;	# path 256
	header)		echo 9000 ;;	# 32 addresses of 254 (64 KiB: tests/unit.c)
	policy)		echo 5000 ;;	# a reply of POLICY_REPLY_MAX and past it
	proxy)		echo 1024 ;;	# a header of PROXY_MAX (536) and what follows
	*)		echo 4096 ;;
	esac
}

dict() {
	case $1 in
	conf)	echo tests/fuzz/conf.dict ;;
	header)	echo tests/fuzz/header.dict ;;
	proxy)	echo tests/fuzz/proxy.dict ;;
	*)	echo tests/fuzz/smtp.dict ;;
	esac
}

failed=0
summary=""
for t in "$@"; do
	bin=build/fuzz/fuzz_$t
	work=build/fuzz/corpus/$t
	art=build/fuzz/artifacts/$t
	log=build/fuzz/fuzz_$t.log
	mkdir -p "$work" "$art"
	printf '==> fuzz %s: %s s\n' "$t" "$seconds"
	start=$(date +%s)
	"$bin" -max_total_time="$seconds" -print_final_stats=1 \
	    -dict="$(dict "$t")" -max_len="${FUZZ_MAX_LEN:-$(max_len "$t")}" \
	    -timeout=10 \
	    -rss_limit_mb=2048 -artifact_prefix="$art/" \
	    "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	[ -n "$execs" ] || execs=0
	# A report libFuzzer did not stop on would still be a failure.
	if [ $rc -eq 0 ] && grep -Eq '^(==[0-9]+==ERROR|SUMMARY: |.*runtime error: |.*check failed: )' "$log"; then
		rc=1
	fi
	if [ $rc -ne 0 ]; then
		failed=1
		# libFuzzer's own exit codes (FuzzerOptions.h); 72 is a signal
		# from outside (^C, kill), not something the input did.
		case $rc in
		70)	why=", timeout" ;;
		71)	why=", out of memory" ;;
		72)	why=", interrupted from outside" ;;
		77)	why=", crash or sanitizer report" ;;
		*)	why="" ;;
		esac
		status="FAILED (exit $rc$why)"
		echo "--- end of $log:"
		tail -n 60 "$log"
		echo "--- inputs kept in $art/:"
		ls -l "$art"
	else
		status=ok
	fi
	printf '%s fuzz_%s execs=%s seconds=%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	    "$t" "$execs" "$secs" "$status" >>build/fuzz/execs.log
	line=$(printf '%-8s %12s execs %6s s  %s' "$t" "$execs" "$secs" "$status")
	echo "    $line"
	summary="$summary    $line
"
done
echo "==> fuzz summary (execs per target):"
printf '%s' "$summary"
exit $failed
