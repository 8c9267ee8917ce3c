#!/usr/bin/env bash
# Runs one fuzz target until it has used CPU_SECONDS of CPU time (not wall
# time: on a shared machine the two differ), then stops it with SIGINT so
# libFuzzer prints its final statistics. The log goes to logs/TARGET.log.
#
#   RUSTC_BOOTSTRAP=1 cargo fuzz build -O      # once
#   bash run.sh engineio_socketio 600          # ten CPU-minutes
set -euo pipefail
cd "$(dirname "$0")"
target=$1
budget=${2:-600}
binary=${BINARY:-target/x86_64-unknown-linux-gnu/release/$target}
mkdir -p "corpus/$target" "artifacts/$target" logs
# Wall-time cap: three times the budget, so a starved run still ends.
nice -n 15 "$binary" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" -max_total_time=$((budget * 3)) \
    -timeout=10 -max_len=16384 -print_final_stats=1 >"logs/$target.log" 2>&1 &
pid=$!
ticks=$(getconf CLK_TCK)
used=0
while kill -0 "$pid" 2>/dev/null; do
    used=$(awk -v t="$ticks" '{ print int(($14 + $15) / t) }' "/proc/$pid/stat" 2>/dev/null || echo "$used")
    # Exited (found a crash, or hit the wall-time cap): a zombie until waited for.
    if awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$pid/stat" 2>/dev/null; then
        break
    fi
    if [ "$used" -ge "$budget" ]; then
        kill -INT "$pid"
        break
    fi
    sleep 5
done
wait "$pid" || true
# The last reading, to within the 5-second poll.
echo "$target: ${used:-0} CPU-seconds (user+system)" >>"logs/$target.log"
