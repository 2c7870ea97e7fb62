#!/usr/bin/env bash
# Runs the project's cargo-fuzz targets, each for a bounded time (or number of runs),
# starting from the corpora kept under version control, and reports executions per
# target. Fails when a target crashes or cannot be run.
#
#   tests/fuzz.sh [--seconds N] [--runs N] [--jobs N] [--merge] [--report FILE] [crate/target ...]
#
#   --seconds N   time per target (default 60); with --runs it is the upper bound
#   --runs N      stop a target after N executions
#   --jobs N      targets fuzzed at once (default 1; the build always runs alone)
#   --merge       afterwards, minimise each target's corpus (committed + new inputs)
#                 back into <crate>/fuzz/corpus/<target>, the copy kept in git
#   --report FILE JSON report (default target/fuzz/report.json)
#
# Targets are found, not listed: every target of every <crate>/fuzz. Working corpora
# and crash artifacts go to target/fuzz/; the committed corpora are only read unless
# --merge is given.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
seconds=60 runs= jobs=1 merge=0 report=$REPO_ROOT/target/fuzz/report.json
selected=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --merge) merge=1; shift ;;
        --report) report=$2; shift 2 ;;
        [0-9]*) seconds=$1; shift ;;  # the old form: tests/fuzz.sh SECONDS
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) selected+=("$1"); shift ;;
    esac
done

# cargo-fuzz passes unstable flags (-Zsanitizer=address and friends). These machines
# have one stable toolchain and can fetch no other, so its rustc is told to accept
# them; the sanitizer runtimes ship with its standard library.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz@0.13.2 \
    || { echo "FAILED: cannot install cargo-fuzz" >&2; exit 1; }

work=$REPO_ROOT/target/fuzz
mkdir -p "$work/logs" "$work/corpus" "$work/artifacts" "$(dirname "$report")"

# crate/target pairs, then one build per crate (never two builds at once).
pairs=()
for dir in "$REPO_ROOT"/*/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    crate=$(basename "$(dirname "$dir")")
    for t in $(cd "$dir/.." && cargo fuzz list); do
        if [ ${#selected[@]} -eq 0 ] || printf '%s\n' "${selected[@]}" | grep -qx "$crate/$t"; then
            pairs+=("$crate/$t")
        fi
    done
done
[ ${#pairs[@]} -gt 0 ] || { echo "fuzz.sh: no targets match ${selected[*]}" >&2; exit 2; }
for crate in $(printf '%s\n' "${pairs[@]}" | cut -d/ -f1 | sort -u); do
    echo "--- build $crate fuzz targets"
    (cd "$REPO_ROOT/$crate" && cargo fuzz build --release >"$work/logs/build-$crate.log" 2>&1) \
        || { tail -40 "$work/logs/build-$crate.log"; echo "FAILED: building $crate fuzz targets" >&2; exit 1; }
done

# Runs one target; its log ends with libFuzzer's final stats.
fuzz_one() {
    local crate=${1%/*} target=${1#*/}
    local committed=$REPO_ROOT/$crate/fuzz/corpus/$target
    local scratch=$work/corpus/$crate-$target log=$work/logs/$crate-$target.log
    mkdir -p "$committed" "$scratch" "$work/artifacts/$crate-$target"
    local limit=(-max_total_time="$seconds")
    [ -n "$runs" ] && limit+=(-runs="$runs")
    (cd "$REPO_ROOT/$crate" && cargo fuzz run --release "$target" "$scratch" "$committed" -- \
        "${limit[@]}" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$crate-$target/" >"$log" 2>&1)
}

status_of=()
running=0
for pair in "${pairs[@]}"; do
    echo "--- fuzz $pair (${runs:+$runs runs, }at most ${seconds}s)"
    rc=$work/rc-${pair/\//-}
    ( if fuzz_one "$pair"; then echo ok; else echo failed; fi >"$rc" ) &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait
for pair in "${pairs[@]}"; do
    status_of+=("$pair=$(cat "$work/rc-${pair/\//-}")")
done

# Minimise committed + new inputs into the committed directory.
if [ "$merge" = 1 ]; then
    for pair in "${pairs[@]}"; do
        crate=${pair%/*} target=${pair#*/}
        committed=$REPO_ROOT/$crate/fuzz/corpus/$target merged=$work/merged-$crate-$target
        rm -rf "$merged"; mkdir -p "$merged"
        echo "--- minimise $pair corpus"
        (cd "$REPO_ROOT/$crate" && cargo fuzz run --release "$target" "$merged" "$committed" \
            "$work/corpus/$crate-$target" -- -merge=1 -rss_limit_mb=2048 \
            >"$work/logs/merge-$crate-$target.log" 2>&1)
        rm -rf "$committed" && mv "$merged" "$committed"
    done
fi

python3 - "$report" "$work" "${status_of[@]}" <<'EOF'
import json, os, re, sys
report, work, statuses = sys.argv[1], sys.argv[2], sys.argv[3:]
out, failed = [], False
for s in statuses:
    pair, status = s.split("=")
    crate, target = pair.split("/")
    log = open(os.path.join(work, "logs", f"{crate}-{target}.log"), errors="replace").read()
    stat = {k: int(v) for k, v in re.findall(r"^stat::(\w+):\s+(\d+)", log, re.M)}
    corpus = os.path.join(os.path.dirname(work), "..", crate, "fuzz", "corpus", target)
    entry = {
        "target": pair,
        "status": status,
        "execs": stat.get("number_of_executed_units"),
        "execs_per_second": stat.get("average_exec_per_sec"),
        "new_units": stat.get("new_units_added"),
        "peak_rss_mb": stat.get("peak_rss_mb"),
        "committed_corpus_files": len(os.listdir(corpus)) if os.path.isdir(corpus) else 0,
    }
    out.append(entry)
    if status != "ok":
        failed = True
        print(f"FAILED: fuzz {pair}; the last lines of {work}/logs/{crate}-{target}.log:")
        print("\n".join(log.splitlines()[-40:]))
    print(f"fuzz {pair}: {status}, {entry['execs']} execs ({entry['execs_per_second']}/s)")
json.dump({"targets": out}, open(report, "w"), indent=2)
print(f"report: {report}")
sys.exit(1 if failed else 0)
EOF
