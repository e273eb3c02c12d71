#!/usr/bin/env bash
# Run the whole mirai test suite:
#   1. Rust unit/integration tests: cargo test --release (with R on PATH and
#      R_HOME set, so extendr-ffi targets the installed R, not its 4.5 default).
#   2. Install the package (R CMD INSTALL .) and run tests/testthat against the
#      installed package.
# The last line printed is the R test summary, alone on its line:
#   "N passed, N failed" (plus ", N skipped" when any were skipped),
# counted in test_that() blocks: a block with any failed expectation or an
# error counts as failed; otherwise a block with a skip counts as skipped.
# Exit status is non-zero if cargo test failed, the install failed, or any R
# test failed or errored.
#
# Usage: bash tools/test.sh [--no-rust] [--no-r] [--filter REGEX]
#   --no-rust       skip cargo test
#   --no-r          skip the install and the R tests
#   --filter REGEX  only run R test files matching REGEX (testthat's filter)
# NOT_CRAN defaults to "true" so skip_on_cran() tests run; export NOT_CRAN=false
# to get R CMD check's behaviour.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_rust=1
run_r=1
filter=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --no-rust) run_rust=0 ;;
    --no-r) run_r=0 ;;
    --filter) shift; filter="${1:?--filter needs a regular expression}" ;;
    --filter=*) filter="${1#--filter=}" ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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

# ---- 1. Rust tests ---------------------------------------------------------
rust_status=0
if [ "$run_rust" -eq 1 ]; then
  echo "== cargo test (rust/) =="
  # libR.so for test binaries that link R (Debian also has /usr/lib/libR.so).
  (cd rust && LD_LIBRARY_PATH="$R_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
     cargo test --release -j 2 2>&1) | tee "$tmp/cargo.log" || rust_status=$?
  if [ "$rust_status" -eq 0 ] && ! grep -q "^test result: ok" "$tmp/cargo.log"; then rust_status=1; fi
  if [ "$rust_status" -ne 0 ]; then
    echo "test.sh: cargo test FAILED (exit $rust_status); continuing with the R tests" >&2
  fi
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
echo "== R CMD INSTALL . =="
if ! R CMD INSTALL --no-multiarch .; then
  echo "test.sh: R CMD INSTALL failed; R tests not run" >&2
  echo "R CMD INSTALL failed; R tests not run"
  exit 1
fi

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
cat(sprintf("\nR tests: %d test blocks, %d expectations passed\n",
            nrow(df), sum(df$passed)))
writeLines(as.character(c(sum(passed), sum(failed), sum(skipped))), out)
RSCRIPT

echo "== R tests (tests/testthat, installed package, NOT_CRAN=$NOT_CRAN) =="
r_status=0
Rscript "$tmp/run-tests.R" "$tmp/counts" "$filter" || r_status=$?

if [ ! -s "$tmp/counts" ]; then
  echo "test.sh: the R test run did not complete (Rscript exit $r_status)" >&2
  [ "$rust_status" -ne 0 ] && echo "test.sh: cargo test also failed" >&2
  echo "R test run aborted (Rscript exit $r_status)"
  exit 1
fi

{ read -r n_pass; read -r n_fail; read -r n_skip; } < "$tmp/counts"

status=0
[ "$rust_status" -ne 0 ] && { echo "test.sh: cargo test FAILED" >&2; status=1; }
[ "$r_status" -ne 0 ] && { echo "test.sh: Rscript exited with $r_status" >&2; status=1; }
[ "$n_fail" -ne 0 ] && status=1

# The closing line counts Rust tests and R test blocks together.
rust_pass=0; rust_fail=0
if [ -s "$tmp/cargo.log" ]; then
  rust_pass=$(grep -o "^test result: [a-zA-Z]*\. [0-9]* passed" "$tmp/cargo.log" | awk '{s+=$4} END {print s+0}')
  rust_fail=$(grep -o "[0-9]* failed;" "$tmp/cargo.log" | awk '{s+=$1} END {print s+0}')
  [ "$rust_status" -ne 0 ] && [ "$rust_fail" -eq 0 ] && rust_fail=1
fi
echo "Rust tests: $rust_pass passed, $rust_fail failed"
n_pass=$((n_pass + rust_pass)); n_fail=$((n_fail + rust_fail))
summary="$n_pass passed, $n_fail failed"
[ "$n_skip" -ne 0 ] && summary="$summary, $n_skip skipped"
echo
echo "$summary"
exit "$status"
