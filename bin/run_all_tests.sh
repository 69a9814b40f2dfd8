#!/usr/bin/env bash
# Run dtf's test suite (a thin wrapper over pytest markers and -k), logging to a timestamped
# directory with a summary. The exit status is pytest's own: it never reports a false PASS.
#
#   bin/run_all_tests.sh [--type all|unit|integration|fault|monitoring|api|performance|security|browser|deploy|multihost]
#                        [--filter EXPR] [--verbose] [--log-dir DIR] [--list]
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }

type=all filter="" verbose=0 list=0 logroot="test-logs"
while [ $# -gt 0 ]; do
    case "$1" in
        --type) type="${2:?--type needs a value}"; shift 2 ;;
        --filter) filter="${2:?--filter needs a value}"; shift 2 ;;
        --verbose|-v) verbose=1; shift ;;
        --log-dir) logroot="${2:?--log-dir needs a value}"; shift 2 ;;
        --list) list=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all_tests.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$type" in
    all|unit|integration|fault|monitoring|api|websocket|performance|security|browser|deploy|multihost) ;;
    *) echo "run_all_tests.sh: unknown --type '$type'" >&2; exit 2 ;;
esac

source bin/_bootstrap.sh

args=(-p no:cacheprovider)
[ "$type" != all ] && args+=(-m "$type")
[ -n "$filter" ] && args+=(-k "$filter")
if [ "$list" = 1 ]; then
    exec python -m pytest --collect-only -q "${args[@]}"
fi
[ "$verbose" = 1 ] && args+=(-v) || args+=(-q)

logdir="$logroot/$(date +%Y%m%d-%H%M%S)-$type"
mkdir -p "$logdir"
echo "run_all_tests: type=$type filter=${filter:-none} logs=$logdir" >&2
python -m pytest "${args[@]}" --junitxml="$logdir/junit.xml" 2>&1 | tee "$logdir/pytest.log"
rc=${PIPESTATUS[0]}
{
    echo "type:    $type"
    echo "filter:  ${filter:-none}"
    echo "exit:    $rc"
    echo "result:  $(tail -n 1 "$logdir/pytest.log")"
} > "$logdir/summary.txt"
cat "$logdir/summary.txt" >&2
exit "$rc"
