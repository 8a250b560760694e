#!/usr/bin/env bash
# make bench: runs every benchmark that reports a ratio against a baseline
# measured in the same run, then writes bench/REPORT.md and bench/ratios.png.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench
out=bench/raw.txt
: > "$out"
BENCHTIME=${BENCHTIME:-}
run() { # package, bench regexp, benchtime
	local pkg=$1 re=$2 bt=${BENCHTIME:-$3}
	[ -d "$pkg" ] || return 0
	echo "bench: $pkg $re ($bt)" >&2
	# A failing benchmark is recorded and the others still run; the report
	# lists what failed and the script exits non-zero at the end.
	if ! go test -run '^$' -bench "$re" -benchtime "$bt" -count 1 -timeout 30m "./$pkg" | tee -a "$out"; then
		echo "FAILED: $pkg $re" | tee -a "$out"
		failed=1
	fi
}
failed=0
export SLUICE_TEST_BIN=${SLUICE_TEST_BIN-$PWD/bin}
# The figures the targets are judged on (issue 15): the real binaries under
# the runner and on their own, baselines in processes of their own, every
# figure the median of alternating rounds with min-max.
run tests/fair 'Bench' 1x
# The fleet (issue 17): gateway -> host against `ssh -tt host` through the
# same sshd, and 100 sessions over three hosts with every byte checked.
run tests/fleet 'Bench' 1x
# In-process figures, kept for finding where time goes.
run rpc 'OneShot|Parallel8' 20000x
run runner '^BenchmarkAcceptSpawnRatio$' 400x # interleaved call and fork+exec; ~35 ms an iteration
run frontend 'Bench' 1x
run internal/revoke '^BenchmarkCheckRatio$' 200x # grant check with the revocation list vs without
run helpers/ptystore '^BenchmarkViewersReportRatio$' 2000x # the frontend's 500 ms pty-viewers report (policy detach), CPU over the interval
run helpers/record 'Record' 1x # recording on against off: cat 100 MB, keystroke echo
# The session load at full size (200 sessions x 60 s); SLUICE_LOAD_FULL=0 for the short one.
export SLUICE_LOAD_FULL=${SLUICE_LOAD_FULL-1}
run tests/load 'Bench' 1x
go run ./bench/report -in "$out" -md bench/REPORT.md -png bench/ratios.png
exit $failed
