#!/usr/bin/env bash
# Run the whole mirai test suite:
#   1. Compile the test build's Rust crate (cargo profile ci: release without
#      LTO; feature test-hooks: fault injection and the boundary's run-time
#      checks) and install it (MIRAI_TEST_HOOKS=1 R CMD INSTALL .; see
#      src/Makevars). The installed library is also checked for entry points
#      R 4.5 lists as non-API (tools/check-nonapi.sh).
#   2. Then three jobs at once (their output is shown as each ends; the
#      Rust compile, clippy and the tarball check at a lower priority, see
#      ci_cargo_low):
#      - Rust: cargo test (unit, conformance, fuzz and property tests) and
#        cargo clippy --all-targets, with the same profile and feature, so
#        they reuse that compile (R on PATH and R_HOME set, so extendr-ffi
#        targets the installed R, not its 4.5 default);
#      - the R tests (tests/testthat) against the installed package, in two
#        R processes that share out the files, longest first (each file
#        whole, in one process; a line per file as it ends, then each
#        process's report), joined by a third once the other two jobs have
#        ended;
#      - what users get: R CMD build (which vendors the crates into the
#        tarball, see `cleanup`; its own install, which only knits the
#        vignettes, links the test build's library), then R CMD check
#        --as-cran --no-manual --no-tests on the tarball with no network and
#        an empty CARGO_HOME: proof that the release build compiles offline
#        from the vendored crates alone, examples and vignettes' code run
#        against it. --no-tests because the same tests run against the same
#        sources alongside; --no-build-vignettes because R CMD build has
#        just knitted them from the same sources (the check still runs
#        their code, against the release build). The check fails on any
#        ERROR or WARNING (NOTEs are listed, and explained in
#        cran-comments.md).
# The last line printed is the summary, alone on its line:
#   "N passed, N failed" (plus ", N skipped" when any were skipped),
# counting R test_that() blocks (a block with any failed expectation or an
# error counts as failed; otherwise a block with a skip counts as skipped),
# Rust tests, clippy, the non-API check and the tarball check as one test
# each. Before it: each step's wall time (and when it started), with the load
# average. Exit status is non-zero if anything failed.
#
# Usage: bash tools/test.sh [--quick] [--long] [--no-rust] [--no-r] [--no-check]
#                           [--filter REGEX] [--lib DIR]
#   --quick         for development (about 3 minutes once compiled): no
#                   clippy, no tarball check, and the R test files that take
#                   longest left out (their names are printed): the network
#                   cuts, the soak, the documentation build, the future
#                   backend, doSNOW's own tests, the 2.2 GB object, and the
#                   peers and services (WebSocket, TLS, sshd/Slurm/SGE)
#   --long          also the long versions of some R tests (exports
#                   MIRAI_TEST_LONG=1): the 130-node cluster, and the
#                   pkgdown site with every article knitted
#   --no-rust       skip cargo test and clippy
#   --no-r          skip the install, the R tests and the tarball check
#   --no-check      skip the tarball build and check
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
run_clippy=1
quick=0
filter=""
lib=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --quick) quick=1; run_check=0; run_clippy=0 ;;
    --long) export MIRAI_TEST_LONG=1 ;;
    --no-rust) run_rust=0 ;;
    --no-r) run_r=0; run_check=0 ;;
    --no-check) run_check=0 ;;
    --lib) shift; lib="${1:?--lib needs a directory}" ;;
    --lib=*) lib="${1#--lib=}" ;;
    --filter) shift; filter="${1:?--filter needs a regular expression}" ;;
    --filter=*) filter="${1#--filter=}" ;;
    -h|--help) sed -n "2,$(grep -n '^set -euo' "$0" | cut -d: -f1)p" "$0" | sed '$d'; exit 0 ;;
    *) echo "test.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# How the R test processes share out the files (each takes the next file
# not yet taken): those that take longest (on two loaded cores) first,
# longest first, then the rest in name order, then the files that mostly
# wait (on timers, other programs, peers; e.g. future 44 s of wall for 14 s
# of CPU, timelimit 30/7), longest first. While cargo and the tarball check
# run, the two cores are busy throughout (some 17 CPU-minutes in under 10
# minutes of wall): a third R process then only slows the others. Once they
# have ended, the two R processes alone leave about half the CPU idle, and
# a third one starts, for the files still untaken: those that mostly wait
# come last so that it finds them. Any files may run at once: none shares a
# port, a network namespace or a service with another (ports are ephemeral
# or inside namespaces a file makes; sshd/Slurm serve test-launchers.R
# only).
longest_first="modes|keepalive|cluster-dosnow|docs|cluster|heal|relay|tls|soak|everywhere|daemons|map|cancel"
waiting_last="future|ws|launchers|timelimit|faults|stuck-daemon|memory|plumber|shiny"
# Left out by --quick (about half of the R tests' time).
long_files="keepalive|soak|docs|future|modes|cluster-dosnow|ws|tls|launchers"

export PATH="$HOME/.cargo/bin:$PATH"
R_HOME="$(R RHOME)"
export R_HOME
export NOT_CRAN="${NOT_CRAN:-true}"

tmp=$(mktemp -d)
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# Background jobs run in their own process group (set -m), so that cleanup
# can end each with everything it started.
set -m

# Each step's wall time, when it started (seconds since this script did) and
# the 1-minute load average when it ended (the machine may be shared).
# Steps of the background jobs append to the same file.
steps="$tmp/steps"
: > "$steps"
load1() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }
# step NAME CMD...: runs CMD, records the step, returns CMD's status.
step() {
  local name="$1" t0=$SECONDS st=0
  shift
  "$@" || st=$?
  printf '%d|%d|%s|%s\n' "$((SECONDS - t0))" "$t0" "$name" "$(load1)" >> "$steps"
  echo "-- $name: $((SECONDS - t0)) s (load $(load1))"
  return "$st"
}
print_steps() {
  [ -s "$steps" ] || return 0
  echo "Step times (s; started at s since the start; 1-min load at its end; total $SECONDS s):"
  awk -F'|' '{ printf "  %5d  at %4d  %-40s load %s\n", $1, $2, $3, $4 }' "$steps"
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

# cargo in rust/, with rust/target whatever the caller's environment says,
# profile ci and feature test-hooks: the test install (src/Makevars), cargo
# test and clippy all use this one compile of the dependency graph.
ci_cargo() {
  (cd rust && CARGO_TARGET_DIR=target LD_LIBRARY_PATH="$R_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
     nice -n "${cargo_nice:-0}" cargo "$@")
}
# The nice value of work nothing waits on while the R tests run: compiling,
# clippy, the tarball's check. The R tests are the longest job, and the
# only one whose checks of time and order a busy machine can strain; they
# get the CPU first, the rest takes what they leave idle (about half, as
# they wait on their daemons).
low_nice=10
ci_cargo_low() { cargo_nice=$low_nice ci_cargo "$@"; }

# ---- Rust tests and clippy (a job: in the background next to the R tests) --
rust_job() {
  local st=0
  echo "== cargo test --profile ci --features test-hooks (rust/) =="
  # libR.so for test binaries that link R (Debian also has /usr/lib/libR.so).
  # Compiled at the lower priority; the tests themselves (some wait for
  # events with deadlines) run at the R tests' priority.
  step "cargo test, compile" ci_cargo_low test --profile ci --features test-hooks -j 2 --no-run > "$tmp/cargo.log" 2>&1 || st=$?
  [ "$st" -eq 0 ] && { step "cargo test" ci_cargo test --profile ci --features test-hooks -j 2 >> "$tmp/cargo.log" 2>&1 || st=$?; }
  grep -vE '^\s+(Compiling|Fresh) ' "$tmp/cargo.log" || true
  if [ "$st" -eq 0 ] && ! grep -q "^test result: ok" "$tmp/cargo.log"; then st=1; fi
  [ "$st" -ne 0 ] && echo "test.sh: cargo test FAILED (exit $st)"
  echo "$st" > "$tmp/cargo.status"
  [ "$run_clippy" -eq 1 ] || return 0
  # Every unsafe block states its safety argument (rust/Cargo.toml denies
  # clippy::undocumented_unsafe_blocks), in the test build's code too.
  echo "== cargo clippy --profile ci --all-targets --features test-hooks (rust/) =="
  st=0
  if ! cargo clippy --version > /dev/null 2>&1; then
    echo "clippy: not installed (rustup component add clippy), not run"
    echo "-1" > "$tmp/clippy.status"
    return 0
  fi
  step "cargo clippy" ci_cargo_low clippy --profile ci -j 2 --all-targets --features test-hooks \
    -- -D clippy::undocumented_unsafe_blocks > "$tmp/clippy.log" 2>&1 || st=$?
  if [ "$st" -eq 0 ]; then echo "clippy: clean"; else cat "$tmp/clippy.log"; echo "test.sh: cargo clippy FAILED"; fi
  echo "$st" > "$tmp/clippy.status"
}

if [ "$run_r" -eq 0 ]; then
  [ "$run_rust" -eq 1 ] || { echo "test.sh: nothing to run (--no-rust --no-r)"; exit 0; }
  rust_job
  print_steps
  rs=$(cat "$tmp/cargo.status"); cs=$(cat "$tmp/clippy.status" 2>/dev/null || echo 0)
  if [ "$rs" -ne 0 ] || [ "$cs" -gt 0 ]; then echo "cargo test or clippy failed; R tests not run"; exit 1; fi
  echo "cargo test passed; R tests not run"
  exit 0
fi

# ---- 1. Compile and install the test build ---------------------------------
# The test build (MIRAI_TEST_HOOKS=1, read by src/Makevars): test-only
# routines such as fault injection, and the boundary's run-time checks. The
# tarball check builds what users get, without it.
echo "== MIRAI_TEST_HOOKS=1 R CMD INSTALL ${lib:+-l $lib }. =="
if ! step "R CMD INSTALL (test build)" env MIRAI_TEST_HOOKS=1 R CMD INSTALL "${install_args[@]}" .; then
  echo "test.sh: R CMD INSTALL failed; R tests not run" >&2
  echo "R CMD INSTALL failed; R tests not run"
  exit 1
fi

# R 4.5 lists entry points that packages may no longer use; only R 4.2 can be
# installed here, so the built library is checked against that list by name
# (a non-API symbol fails the run as a failed test would).
api_status=0
echo "== Non-API R entry points (tools/check-nonapi.sh, R 4.5's list) =="
so_path=$(Rscript -e 'cat(system.file("libs", "mirai.so", package = "mirai"))')
api_out=$(bash tools/check-nonapi.sh "$so_path" 2>&1) || api_status=$?
if [ "$api_status" -eq 0 ]; then echo "$api_out" | tail -n 1; else echo "$api_out"; fi

# ---- 2a. Rust tests and clippy, in the background --------------------------
if [ "$run_rust" -eq 1 ]; then
  # rust.done, however the job ends, tells the third R process to start.
  ( trap 'touch "$tmp/rust.done"' EXIT; rust_job ) > "$tmp/rust.out" 2>&1 &
  bg_pids+=("$!"); rust_pid=$!
fi

# ---- 2b. R CMD build, then R CMD check of the tarball, offline, in the
# background. In a temporary directory with NOT_CRAN unset, as on CRAN.
# R CMD build's own install (to knit the vignettes into the tarball) is a
# test build that links the library the test install has just built from
# the same sources, compiling nothing (src/Makevars, MIRAI_TEST_LIB).
# R CMD check installs the tarball itself (as CRAN does), with the release
# profile, here with no network (a new network namespace with only loopback
# up, for the examples and vignettes) and an empty CARGO_HOME: proof that
# the tarball builds from its vendored crates alone. With --no-tests: the R
# tests run alongside against a package built from the same sources.
check_job() {
  local cdir="$tmp/check" repo tarball offline clog cstatus
  repo=$(pwd)
  mkdir -p "$cdir/cargo-home" "$cdir/src/mirai"
  echo "== R CMD build; R CMD check --as-cran --no-manual --no-tests on the tarball, offline =="
  # R CMD build copies the whole directory before it drops what
  # .Rbuildignore lists: it is given a copy of the working tree without
  # rust/target (which cargo test is writing to meanwhile) and .git.
  tar -C "$repo" --exclude=./rust/target --exclude=./.git -cf - . | tar -C "$cdir/src/mirai" -xf -
  if ! step "R CMD build" sh -c 'cd "$1" && exec env -u NOT_CRAN MIRAI_TEST_HOOKS=1 MIRAI_TEST_LIB="$2/rust/target/ci/libmirai.a" R CMD build src/mirai' \
         sh "$cdir" "$repo" > "$cdir/build.log" 2>&1; then
    echo "test.sh: R CMD build FAILED; the end of its log:"
    tail -n 40 "$cdir/build.log"
    return 1
  fi
  tarball=$(ls "$cdir"/mirai_*.tar.gz)
  echo "built $(basename "$tarball") ($(wc -c < "$tarball") bytes)"
  # The check at the lower priority (see ci_cargo_low). Not the build
  # before it: at nice 10 it took 278 s rather than about 150, and the
  # check after it became the run's longest path, ending 95 s after the R
  # tests.
  renice -n "$low_nice" -p "$BASHPID" > /dev/null 2>&1 || true
  offline=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh)
  if ! "${offline[@]}" true 2>/dev/null; then
    echo "test.sh: cannot make a network namespace here (unshare -n, ip): checking WITH network access"
    offline=()
  fi
  step "R CMD check (offline)" sh -c 'cd "$1" && shift && exec "$@"' sh "$cdir" \
    env CARGO_HOME="$cdir/cargo-home" "${offline[@]}" env -u NOT_CRAN -u MIRAI_TEST_HOOKS -u MIRAI_TEST_LIB \
      _R_CHECK_CRAN_INCOMING_REMOTE_=false _R_CHECK_SYSTEM_CLOCK_=false \
      R CMD check --as-cran --no-manual --no-tests --no-build-vignettes "$tarball" > "$cdir/check.log" 2>&1 || true
  clog="$cdir/mirai.Rcheck/00check.log"
  cstatus=$(grep -m1 '^Status:' "$clog" 2>/dev/null || true)
  echo "checked it ${offline[*]:+offline}: ${cstatus:-no Status line}"
  grep -E '^(Using .*(cargo|rustc)|Rust crates:)' "$cdir/mirai.Rcheck/00install.out" 2>/dev/null | sed 's/^/  /' || true
  grep -E '^\* checking .*\[[0-9]+s/[0-9]+s\]' "$clog" 2>/dev/null | sed 's/^/  /' || true
  # Every NOTE, WARNING and ERROR with its details.
  if [ -f "$clog" ]; then
    awk '/^\* / { show = ($0 ~ /(NOTE|WARNING|ERROR)$/) } show' "$clog" | sed 's/^/  /'
  fi
  if [ -n "$cstatus" ] && ! echo "$cstatus" | grep -qE 'ERROR|WARNING'; then
    return 0
  fi
  echo "test.sh: R CMD check found an ERROR or WARNING (or did not finish); the end of its output:"
  tail -n 30 "$cdir/check.log"
  if [ -f "$cdir/mirai.Rcheck/00install.out" ] && ! grep -q '^\* DONE' "$cdir/mirai.Rcheck/00install.out"; then
    echo "test.sh: the end of the install log:"
    tail -n 30 "$cdir/mirai.Rcheck/00install.out"
  fi
  return 1
}
if [ "$run_check" -eq 1 ]; then
  { st=0; check_job || st=$?; echo "$st" > "$tmp/check.status"; } > "$tmp/check.out" 2>&1 &
  bg_pids+=("$!"); check_pid=$!
fi

# ---- 2c. R tests against the installed package, two (then three) R processes
cat > "$tmp/run-tests.R" <<'RSCRIPT'
# Rscript run-tests.R OUT FILTER NAME ORDER EXCLUDE CLAIMS LAST: runs test
# files (those matching FILTER, all if empty, but not EXCLUDE), taking them
# in ORDER's order, then by name, then in LAST's order, each claimed by
# creating CLAIMS/<file> (an atomic mkdir) so that several of these
# processes share them out. A line per file to stderr; the reports to
# stdout. Writes the counts of passed, failed and skipped blocks to OUT.
args <- commandArgs(trailingOnly = TRUE)
out <- args[[1L]]
filter <- args[[2L]]
name <- args[[3L]]
order <- strsplit(args[[4L]], "|", fixed = TRUE)[[1L]]
exclude <- args[[5L]]
claims <- args[[6L]]
last <- strsplit(args[[7L]], "|", fixed = TRUE)[[1L]]
options(warn = 1)

files <- sub("^test-(.*)\\.R$", "\\1", list.files("tests/testthat", "^test-.*\\.R$"))
if (nzchar(filter)) files <- files[grepl(filter, files)]
if (nzchar(exclude)) files <- files[!grepl(sprintf("^(%s)$", exclude), files)]
files <- c(intersect(order, files), sort(setdiff(files, c(order, last))), intersect(last, files))

# Also count a block whose error was recorded while the block went on (an
# error signalled and then handled further down still fails the block).
bad <- function(results) any(vapply(results, inherits, logical(1L), c("expectation_failure", "expectation_error")))
first_msg <- function(results, cls) {
  for (r in results) if (inherits(r, cls)) return(conditionMessage(r))
  ""
}
one_line <- function(x) sub("^Reason: ", "", gsub("[[:space:]]+", " ", trimws(x)))

n <- c(passed = 0L, failed = 0L, skipped = 0L, blocks = 0L, expectations = 0L)
skips <- character(); fails <- character(); secs <- numeric()
for (f in files) {
  if (!dir.create(file.path(claims, f), showWarnings = FALSE)) next
  cat(sprintf("\n== test-%s.R ==\n", f))
  t0 <- Sys.time()
  c0 <- proc.time()
  res <- testthat::test_dir(
    "tests/testthat",
    filter = sprintf("^%s$", f),
    package = "mirai",
    load_package = "installed",
    reporter = testthat::CheckReporter$new(),
    stop_on_failure = FALSE,
    stop_on_warning = FALSE
  )
  secs[[f]] <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  # CPU of this process and of the children it reaped (daemons, scripts):
  # a file that mostly waits costs the other lane little.
  cpu <- sum((proc.time() - c0)[c("user.self", "sys.self", "user.child", "sys.child")], na.rm = TRUE)
  df <- as.data.frame(res)
  label <- function(i) if (is.na(df$test[i])) "(code outside test_that)" else df$test[i]
  failed <- df$failed > 0L | df$error | vapply(df$result, bad, logical(1L))
  skipped <- !failed & df$skipped
  for (i in which(skipped))
    skips <- c(skips, sprintf("  SKIP  %s: %s -- %s", df$file[i], label(i),
                              one_line(first_msg(df$result[[i]], "expectation_skip"))))
  for (i in which(failed))
    fails <- c(fails, sprintf("  %s  %s: %s -- %s", if (df$error[i]) "ERROR" else "FAIL ", df$file[i], label(i),
                              substr(one_line(first_msg(df$result[[i]], c("expectation_failure", "expectation_error"))), 1L, 600L)))
  n <- n + c(sum(!failed & !skipped), sum(failed), sum(skipped), nrow(df), sum(df$passed))
  message(sprintf("  %-6s %6.1f s (cpu %5.1f s)  test-%s.R: %d blocks, %d failed, %d skipped", name, secs[[f]], cpu, f,
                  nrow(df), sum(failed), sum(skipped)))
}

if (length(skips)) cat("\n== Skipped tests (", length(skips), ") ==\n", paste0(skips, "\n"), sep = "")
if (length(fails)) cat("\n== Failed tests (", length(fails), ") ==\n", paste0(fails, "\n"), sep = "")
# Again at the very end of test.sh's output, which is what a CI log shows.
writeLines(fails, paste0(out, ".fails"))
cat(sprintf("\nR tests (%s): %d files in %.0f s, %d test blocks, %d expectations passed\n",
            name, length(secs), sum(secs), n[["blocks"]], n[["expectations"]]))
writeLines(as.character(n[c("passed", "failed", "skipped")]), out)
RSCRIPT

exclude=""
if [ "$quick" -eq 1 ]; then
  exclude="$long_files"
  echo "test.sh --quick: not running the R test files ${long_files//|/, }; no clippy, no tarball check"
fi
echo "== R tests (tests/testthat, installed package, NOT_CRAN=$NOT_CRAN), two R processes, a third once cargo and the check have ended =="
mkdir "$tmp/claims"
lanes=(A B C)
for l in "${lanes[@]}"; do
  (
    if [ "$l" = C ]; then
      # Until the other jobs have ended (each leaves a file when it does),
      # or the two R processes have, leaving no file to take.
      while { { [ "$run_rust" -eq 1 ] && [ ! -e "$tmp/rust.done" ]; } ||
              { [ "$run_check" -eq 1 ] && [ ! -e "$tmp/check.status" ]; }; } &&
            { kill -0 "$lane_pid_A" 2>/dev/null || kill -0 "$lane_pid_B" 2>/dev/null; }; do sleep 1; done
    fi
    step "R tests, process $l" Rscript "$tmp/run-tests.R" "$tmp/counts.$l" "$filter" "$l" "$longest_first" \
      "$exclude" "$tmp/claims" "$waiting_last" > "$tmp/r-tests.$l.out" < /dev/null
  ) &
  bg_pids+=("$!"); eval "lane_pid_$l=\$!"
  [ "$l" = C ] || sleep 1
done
r_status=0
for l in "${lanes[@]}"; do
  eval "wait \"\$lane_pid_$l\"" || r_status=$?
done
for l in "${lanes[@]}"; do
  echo
  echo "== R tests, process $l: reports =="
  cat "$tmp/r-tests.$l.out"
done

n_pass=0; n_fail=0; n_skip=0
r_incomplete=0
for l in "${lanes[@]}"; do
  if [ ! -s "$tmp/counts.$l" ]; then
    echo "test.sh: the R test process $l did not complete" >&2
    r_incomplete=1
    continue
  fi
  { read -r a; read -r b; read -r c; } < "$tmp/counts.$l"
  n_pass=$((n_pass + a)); n_fail=$((n_fail + b)); n_skip=$((n_skip + c))
done

# ---- 3. The background jobs' reports ---------------------------------------
rust_status=0; clippy_status=0
if [ "$run_rust" -eq 1 ]; then
  wait "$rust_pid" || true
  echo
  cat "$tmp/rust.out"
  rust_status=$(cat "$tmp/cargo.status" 2>/dev/null || echo 1)
  [ "$run_clippy" -eq 1 ] && clippy_status=$(cat "$tmp/clippy.status" 2>/dev/null || echo 1)
fi
check_status=-1
if [ "$run_check" -eq 1 ]; then
  wait "$check_pid" || true
  echo
  cat "$tmp/check.out"
  check_status=$(cat "$tmp/check.status" 2>/dev/null || echo 1)
  [ "$check_status" -eq 0 ] || check_status=1
fi
bg_pids=()

status=0
[ "$rust_status" -ne 0 ] && { echo "test.sh: cargo test FAILED" >&2; status=1; }
[ "$clippy_status" -gt 0 ] && { echo "test.sh: cargo clippy FAILED" >&2; status=1; }
[ "$r_status" -ne 0 ] && { echo "test.sh: an R test process exited with a non-zero status" >&2; status=1; }
[ "$r_incomplete" -ne 0 ] && { n_fail=$((n_fail + 1)); status=1; }
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
if [ "$run_rust" -eq 1 ]; then
  echo "Rust tests: $rust_pass passed, $rust_fail failed"
  n_pass=$((n_pass + rust_pass)); n_fail=$((n_fail + rust_fail))
  case "$clippy_status" in
    -1) ;;
    0) [ "$run_clippy" -eq 1 ] && n_pass=$((n_pass + 1)) ;;
    *) n_fail=$((n_fail + 1)) ;;
  esac
fi
case "$check_status" in
  0) echo "Tarball check (R CMD build, offline R CMD check): passed"; n_pass=$((n_pass + 1)) ;;
  1) echo "Tarball check (R CMD build, offline R CMD check): FAILED"; n_fail=$((n_fail + 1)) ;;
esac
if [ "$api_status" -eq 0 ]; then n_pass=$((n_pass + 1)); else n_fail=$((n_fail + 1)); fi
print_steps
if cat "$tmp"/counts.?.fails 2>/dev/null | grep -q .; then
  echo
  echo "Failed R tests, with the first failure's message:"
  cat "$tmp"/counts.?.fails
fi
summary="$n_pass passed, $n_fail failed"
[ "$n_skip" -ne 0 ] && summary="$summary, $n_skip skipped"
echo
echo "$summary"
exit "$status"
