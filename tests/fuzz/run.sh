#!/bin/bash
# Runs one libFuzzer harness: run.sh BINARY SEEDS FUZZ_DIR SECONDS (make fuzz calls it).
# New inputs go to FUZZ_DIR/corpus/NAME (the seeds are only read), a crashing input to
# FUZZ_DIR/crash/NAME-*, the whole output to FUZZ_DIR/log/NAME.log. Prints one line per harness;
# on a finding, the report and how to reproduce it, and exits 1.
set -u
bin=$1 seeds=$2 dir=$3 seconds=$4
name=$(basename "$bin")
corpus=$dir/corpus/$name
log=$dir/log/$name.log
mkdir -p "$corpus" "$dir/crash" "$dir/log"
rm -f "$dir/crash/$name-"*

args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
      -artifact_prefix="$dir/crash/$name-")
[ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")

"$bin" "${args[@]}" "$corpus" "$seeds" >"$log" 2>&1
rc=$?

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -n 1)
crash=$(ls "$dir/crash/$name-"* 2>/dev/null | head -n 1)
if [ "$rc" -ne 0 ] || [ -n "$crash" ]; then
        echo "fuzz $name: FAILED (exit $rc) after ${runs:-?} runs; the end of $log:"
        tail -n 60 "$log"
        [ -n "$crash" ] && echo "fuzz $name: the input is $crash; reproduce with: $bin $crash" \
                "(then add it to $seeds/ as a regression input once fixed)"
        exit 1
fi
echo "fuzz $name: ${runs:-?} runs in ${secs:-$seconds} s, ${cov:-no coverage line}, no finding"
