#!/usr/bin/env bash
# Run the whole mirai test suite:
#   1. Rust unit/integration tests: cargo test --release (with R on PATH and
#      R_HOME set, so extendr-ffi targets the installed R, not its 4.5 default).
#   2. Install the package (R CMD INSTALL .) and run tests/testthat against the
#      installed package.
#      The installed library is also checked for entry points R 4.5 lists as
#      non-API (tools/check-nonapi.sh).
#   3. Check what users get: R CMD build (which vendors the crates into the
#      tarball, see `cleanup`), then R CMD check --as-cran --no-manual
#      --no-tests on the tarball with no network and an empty CARGO_HOME
#      (proof that it builds offline; the tests have just run in step 2).
#      The check fails on any ERROR or WARNING (NOTEs are listed, and
#      explained in cran-comments.md).
# The last line printed is the summary, alone on its line:
#   "N passed, N failed" (plus ", N skipped" when any were skipped),
# counting R test_that() blocks (a block with any failed expectation or an
# error counts as failed; otherwise a block with a skip counts as skipped),
# Rust tests, the non-API check and the tarball check as one test each.
# Exit status is non-zero if cargo test failed, the install failed, any R
# test failed or errored, or the tarball check failed.
#
# Usage: bash tools/test.sh [--no-rust] [--no-r] [--no-check] [--filter REGEX]
#                           [--lib DIR]
#   --no-rust       skip cargo test
#   --no-r          skip the install, the R tests and the tarball check
#   --no-check      skip the tarball build and check (4-6 minutes on 2 cores)
#   --filter REGEX  only run R test files matching REGEX (testthat's filter)
#   --lib DIR       install into library DIR (exported in R_LIBS for the
#                   tests and the daemons they start) instead of R's default
# NOT_CRAN defaults to "true" so skip_on_cran() tests run; export NOT_CRAN=false
# to get R CMD check's behaviour.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_rust=1
run_r=1
run_check=1
filter=""
lib=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --no-rust) run_rust=0 ;;
    --no-r) run_r=0; run_check=0 ;;
    --no-check) run_check=0 ;;
    --lib) shift; lib="${1:?--lib needs a directory}" ;;
    --lib=*) lib="${1#--lib=}" ;;
    --filter) shift; filter="${1:?--filter needs a regular expression}" ;;
    --filter=*) filter="${1#--filter=}" ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

export PATH="$HOME/.cargo/bin:$PATH"
R_HOME="$(R RHOME)"
export R_HOME
export NOT_CRAN="${NOT_CRAN:-true}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Each step's wall time, with the 1-minute load average when it ended (the
# machine may be shared): printed as the step ends, and all together before
# the summary.
step_names=(); step_secs=(); step_loads=()
step_t0=0
load1() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }
step_begin() { step_t0=$SECONDS; step_name="$1"; }
step_end() {
  local s=$((SECONDS - step_t0)) l
  l=$(load1)
  step_names+=("$step_name"); step_secs+=("$s"); step_loads+=("$l")
  echo "-- $step_name: $s s (load $l)"
}
print_steps() {
  [ "${#step_names[@]}" -gt 0 ] || return 0
  echo "Step times (s, 1-min load at its end; total $SECONDS s):"
  local i
  for i in "${!step_names[@]}"; do
    printf '  %5d  %-44s load %s\n' "${step_secs[$i]}" "${step_names[$i]}" "${step_loads[$i]}"
  done
}
echo "test.sh: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

install_args=(--no-multiarch)
if [ -n "$lib" ]; then
  mkdir -p "$lib"
  lib=$(cd "$lib" && pwd)
  install_args+=(-l "$lib")
  # The tests' own Rscript children and the daemons find the package here.
  export R_LIBS="$lib${R_LIBS:+:$R_LIBS}"
fi

# ---- 1. Rust tests ---------------------------------------------------------
rust_status=0
if [ "$run_rust" -eq 1 ]; then
  echo "== cargo test (rust/) =="
  step_begin "cargo test"
  # libR.so for test binaries that link R (Debian also has /usr/lib/libR.so).
  # Profile ci and feature test-hooks, in rust/target whatever the caller's
  # environment says: the same compile as clippy's and the test install's
  # below (src/Makevars), so the dependency graph is compiled once.
  (cd rust && CARGO_TARGET_DIR=target LD_LIBRARY_PATH="$R_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
     cargo test --profile ci --features test-hooks -j 2 2>&1) | tee "$tmp/cargo.log" || rust_status=$?
  if [ "$rust_status" -eq 0 ] && ! grep -q "^test result: ok" "$tmp/cargo.log"; then rust_status=1; fi
  step_end
  if [ "$rust_status" -ne 0 ]; then
    echo "test.sh: cargo test FAILED (exit $rust_status); continuing with the R tests" >&2
  fi
  # Every unsafe block states its safety argument (rust/Cargo.toml denies
  # clippy::undocumented_unsafe_blocks), in the test build's code too.
  echo "== cargo clippy --all-targets --features test-hooks (rust/) =="
  step_begin "cargo clippy"
  if ! cargo clippy --version > /dev/null 2>&1; then
    echo "clippy: not installed (rustup component add clippy), not run"
  elif (cd rust && CARGO_TARGET_DIR=target cargo clippy --profile ci -j 2 --all-targets --features test-hooks -- -D clippy::undocumented_unsafe_blocks 2>&1) \
       > "$tmp/clippy.log"; then
    echo "clippy: clean"
  else
    cat "$tmp/clippy.log"
    echo "test.sh: cargo clippy FAILED; continuing with the R tests" >&2
    rust_status=1
  fi
  step_end
fi

if [ "$run_r" -eq 0 ]; then
  if [ "$rust_status" -ne 0 ]; then
    echo "cargo test failed; R tests not run"
    exit 1
  fi
  echo "cargo test passed; R tests not run"
  exit 0
fi

# ---- 2. Install the package ------------------------------------------------
# The test build (MIRAI_TEST_HOOKS=1, read by src/Makevars): test-only
# routines such as fault injection, and the boundary's run-time checks. The
# tarball check (step 4) builds what users get, without it.
echo "== MIRAI_TEST_HOOKS=1 R CMD INSTALL ${lib:+-l $lib }. =="
step_begin "R CMD INSTALL (test build)"
if ! MIRAI_TEST_HOOKS=1 R CMD INSTALL "${install_args[@]}" .; then
  echo "test.sh: R CMD INSTALL failed; R tests not run" >&2
  echo "R CMD INSTALL failed; R tests not run"
  exit 1
fi
step_end

# R 4.5 lists entry points that packages may no longer use; only R 4.2 can be
# installed here, so the built library is checked against that list by name
# (a non-API symbol fails the run as a failed test would).
api_status=0
echo "== Non-API R entry points (tools/check-nonapi.sh, R 4.5's list) =="
so_path=$(Rscript -e 'cat(system.file("libs", "mirai.so", package = "mirai"))')
api_out=$(bash tools/check-nonapi.sh "$so_path" 2>&1) || api_status=$?
if [ "$api_status" -eq 0 ]; then echo "$api_out" | tail -n 1; else echo "$api_out"; fi

# ---- 3. R tests against the installed package ------------------------------
cat > "$tmp/run-tests.R" <<'RSCRIPT'
args <- commandArgs(trailingOnly = TRUE)
out <- args[[1L]]
filter <- if (length(args) > 1L && nzchar(args[[2L]])) args[[2L]] else NULL
options(warn = 1)

res <- testthat::test_dir(
  "tests/testthat",
  filter = filter,
  package = "mirai",
  load_package = "installed",
  reporter = testthat::ProgressReporter$new(show_praise = FALSE, max_failures = Inf),
  stop_on_failure = FALSE,
  stop_on_warning = FALSE
)
df <- as.data.frame(res)

# Also count a block whose error was recorded while the block went on (an
# error signalled and then handled further down still fails the block).
bad <- function(results) any(vapply(results, inherits, logical(1L), c("expectation_failure", "expectation_error")))
failed <- df$failed > 0L | df$error | vapply(df$result, bad, logical(1L))
skipped <- !failed & df$skipped
passed <- !failed & !skipped

first_msg <- function(results, cls) {
  for (r in results) if (inherits(r, cls)) return(conditionMessage(r))
  ""
}
label <- function(i) if (is.na(df$test[i])) "(code outside test_that)" else df$test[i]
one_line <- function(x) sub("^Reason: ", "", gsub("[[:space:]]+", " ", trimws(x)))

if (any(skipped)) {
  cat("\n== Skipped tests (", sum(skipped), ") ==\n", sep = "")
  for (i in which(skipped))
    cat(sprintf("  SKIP  %s: %s -- %s\n", df$file[i], label(i),
                one_line(first_msg(df$result[[i]], "expectation_skip"))))
}
if (any(failed)) {
  cat("\n== Failed tests (", sum(failed), ") ==\n", sep = "")
  for (i in which(failed))
    cat(sprintf("  %s  %s: %s\n", if (df$error[i]) "ERROR" else "FAIL ",
                df$file[i], label(i)))
}
# The slowest files (wall time of their test blocks).
if (nrow(df)) {
  secs <- sort(tapply(df$real, df$file, sum), decreasing = TRUE)
  cat("\n== Slowest R test files (s) ==\n")
  top <- utils::head(secs, 15L)
  cat(sprintf("  %6.1f  %s\n", top, names(top)), sep = "")
  cat(sprintf("  %6.1f  all %d files\n", sum(secs), length(secs)))
}
cat(sprintf("\nR tests: %d test blocks, %d expectations passed\n",
            nrow(df), sum(df$passed)))
writeLines(as.character(c(sum(passed), sum(failed), sum(skipped))), out)
RSCRIPT

echo "== R tests (tests/testthat, installed package, NOT_CRAN=$NOT_CRAN) =="
step_begin "R tests"
r_status=0
Rscript "$tmp/run-tests.R" "$tmp/counts" "$filter" || r_status=$?
step_end

if [ ! -s "$tmp/counts" ]; then
  echo "test.sh: the R test run did not complete (Rscript exit $r_status)" >&2
  [ "$rust_status" -ne 0 ] && echo "test.sh: cargo test also failed" >&2
  echo "R test run aborted (Rscript exit $r_status)"
  exit 1
fi

{ read -r n_pass; read -r n_fail; read -r n_skip; } < "$tmp/counts"

# ---- 4. R CMD build, then R CMD check of the tarball, offline --------------
# In a temporary directory with NOT_CRAN unset, as on CRAN. R CMD check
# installs the tarball itself (as CRAN does), here with no network (a new
# network namespace with only loopback up, for the examples and vignettes)
# and an empty CARGO_HOME: proof that the tarball builds from its vendored
# crates alone. With --no-tests: step 3 has just run the same tests against
# a package built from the same sources.
check_status=-1
if [ "$run_check" -eq 1 ]; then
  echo
  echo "== R CMD build; R CMD check --as-cran --no-manual --no-tests on the tarball, offline =="
  cdir="$tmp/check"
  mkdir -p "$cdir/cargo-home"
  repo=$(pwd)
  check_status=1
  t0=$SECONDS
  step_begin "R CMD build"
  if ! (cd "$cdir" && env -u NOT_CRAN MIRAI_TEST_HOOKS=1 MIRAI_TEST_TARGET_DIR="$repo/rust/target" \
          R CMD build "$repo") > "$cdir/build.log" 2>&1; then
    step_end
    echo "test.sh: R CMD build FAILED; the end of its log:" >&2
    tail -n 40 "$cdir/build.log" >&2
  else
    step_end
    t1=$SECONDS
    tarball=$(ls "$cdir"/mirai_*.tar.gz)
    echo "built $(basename "$tarball") ($(wc -c < "$tarball") bytes) in $((t1 - t0)) s"
    offline=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh)
    if ! "${offline[@]}" true 2>/dev/null; then
      echo "test.sh: cannot make a network namespace here (unshare -n, ip): checking WITH network access" >&2
      offline=()
    fi
    (cd "$cdir" && CARGO_HOME="$cdir/cargo-home" "${offline[@]}" env -u NOT_CRAN -u MIRAI_TEST_HOOKS -u MIRAI_TEST_TARGET_DIR \
       _R_CHECK_CRAN_INCOMING_REMOTE_=false _R_CHECK_SYSTEM_CLOCK_=false \
       R CMD check --as-cran --no-manual --no-tests "$tarball") > "$cdir/check.log" 2>&1 || true
    t2=$SECONDS
    step_name="R CMD check (offline)"; step_t0=$t1; step_end
    clog="$cdir/mirai.Rcheck/00check.log"
    cstatus=$(grep -m1 '^Status:' "$clog" 2>/dev/null || true)
    echo "checked it ${offline[*]:+offline }in $((t2 - t1)) s: ${cstatus:-no Status line}"
    grep -E '^(Using .*(cargo|rustc)|Rust crates:)' "$cdir/mirai.Rcheck/00install.out" 2>/dev/null | sed 's/^/  /' || true
    # Every NOTE, WARNING and ERROR with its details.
    if [ -f "$clog" ]; then
      awk '/^\* / { show = ($0 ~ /(NOTE|WARNING|ERROR)$/) } show' "$clog" | sed 's/^/  /'
    fi
    if [ -n "$cstatus" ] && ! echo "$cstatus" | grep -qE 'ERROR|WARNING'; then
      check_status=0
    else
      echo "test.sh: R CMD check found an ERROR or WARNING (or did not finish); the end of its output:" >&2
      tail -n 30 "$cdir/check.log" >&2
      if [ -f "$cdir/mirai.Rcheck/00install.out" ] && ! grep -q '^\* DONE' "$cdir/mirai.Rcheck/00install.out"; then
        echo "test.sh: the end of the install log:" >&2
        tail -n 30 "$cdir/mirai.Rcheck/00install.out" >&2
      fi
    fi
  fi
fi

status=0
[ "$rust_status" -ne 0 ] && { echo "test.sh: cargo test FAILED" >&2; status=1; }
[ "$r_status" -ne 0 ] && { echo "test.sh: Rscript exited with $r_status" >&2; status=1; }
[ "$n_fail" -ne 0 ] && status=1
[ "$check_status" -eq 1 ] && { echo "test.sh: the tarball check FAILED" >&2; status=1; }
[ "$api_status" -ne 0 ] && { echo "test.sh: the library uses non-API R entry points" >&2; status=1; }

# The closing line counts Rust tests and R test blocks together.
rust_pass=0; rust_fail=0
if [ -s "$tmp/cargo.log" ]; then
  rust_pass=$(grep -o "^test result: [a-zA-Z]*\. [0-9]* passed" "$tmp/cargo.log" | awk '{s+=$4} END {print s+0}')
  rust_fail=$(grep -o "[0-9]* failed;" "$tmp/cargo.log" | awk '{s+=$1} END {print s+0}')
  [ "$rust_status" -ne 0 ] && [ "$rust_fail" -eq 0 ] && rust_fail=1
fi
echo "Rust tests: $rust_pass passed, $rust_fail failed"
n_pass=$((n_pass + rust_pass)); n_fail=$((n_fail + rust_fail))
case "$check_status" in
  0) echo "Tarball check (R CMD build, offline R CMD check): passed"; n_pass=$((n_pass + 1)) ;;
  1) echo "Tarball check (R CMD build, offline R CMD check): FAILED"; n_fail=$((n_fail + 1)) ;;
esac
if [ "$api_status" -eq 0 ]; then n_pass=$((n_pass + 1)); else n_fail=$((n_fail + 1)); fi
print_steps
summary="$n_pass passed, $n_fail failed"
[ "$n_skip" -ne 0 ] && summary="$summary, $n_skip skipped"
echo
echo "$summary"
exit "$status"
