#!/usr/bin/env bash
# Long fuzz run: rust/tests/fuzz.rs and rust/tests/ws_fuzz.rs alone, with
# MIRAI_FUZZ_CASES times their default case counts. Default here 30x: 7.8M
# frame-decoder cases, 8.4M envelope-decoder cases, 2 x 20,000 hostile
# handshakes (their cap), and 4.2M WebSocket cases (reader, upgrade, pongs).
#
#   bench/fuzz.sh          # 30x
#   bench/fuzz.sh 100      # 100x
#
# Extra arguments go to the test binaries, e.g. `bench/fuzz.sh 10 frame_`
# (a filter that matches nothing in one file runs nothing there).
# The crate must be built against the R on PATH: R_HOME and
# LD_LIBRARY_PATH follow `R RHOME`.
set -euo pipefail

mult="${1:-30}"
shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
R_HOME="$(R RHOME)"
export R_HOME
export LD_LIBRARY_PATH="$R_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MIRAI_FUZZ_CASES="$mult"

cd "$here/../rust"
echo "fuzz: MIRAI_FUZZ_CASES=$MIRAI_FUZZ_CASES (multiplier of the default counts)"
# Build first so the timing below is the fuzzing alone.
cargo test --release -j 2 --test fuzz --test ws_fuzz --no-run
start=$(date +%s%N)
status=0
cargo test --release -j 2 --test fuzz --test ws_fuzz -- --nocapture "$@" || status=$?
ms=$((($(date +%s%N) - start) / 1000000))
printf 'fuzz: elapsed %d.%03d s (MIRAI_FUZZ_CASES=%s), exit status %d\n' $((ms / 1000)) $((ms % 1000)) "$MIRAI_FUZZ_CASES" "$status"
exit "$status"
