#!/usr/bin/env bash
# Check that the package's shared object uses no entry point that R lists as
# non-API (R CMD check: "Found non-API calls to R"), using the list in
# tools/r-nonapi.txt (taken from R 4.5's tools/R/sotools.R).
#
# Usage: tools/check-nonapi.sh [path/to/mirai.so]
#   Default: src/mirai.so under the repo root if it exists, otherwise the
#   installed package's libs/mirai.so.
# Exit status: 0 if no non-API symbol is used, 1 if any is, 2 on usage errors.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
list="$script_dir/r-nonapi.txt"

if [[ ! -f "$list" ]]; then
  echo "error: list of non-API names not found: $list" >&2
  exit 2
fi
if ! command -v nm >/dev/null 2>&1; then
  echo "error: 'nm' (binutils) is required" >&2
  exit 2
fi

if [[ $# -ge 1 ]]; then
  so="$1"
elif [[ -f "$repo_root/src/mirai.so" ]]; then
  so="$repo_root/src/mirai.so"
else
  so="$(Rscript -e 'cat(system.file("libs", "mirai.so", package = "mirai"))' 2>/dev/null || true)"
fi
if [[ -z "${so:-}" || ! -f "$so" ]]; then
  echo "error: shared object not found (build the package or pass a path): ${so:-<none>}" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Undefined dynamic symbols, with ELF version suffixes (@GLIBC_2.2.5, @@...) removed.
nm -D --undefined-only "$so" | awk '{ print $NF }' | sed 's/@.*//' \
  | LC_ALL=C sort -u > "$tmp/undef"
# The non-API names, without header comments or blank lines.
grep -v -e '^#' -e '^[[:space:]]*$' "$list" | LC_ALL=C sort -u > "$tmp/nonapi"

n_undef=$(wc -l < "$tmp/undef" | tr -d ' ')
n_names=$(wc -l < "$tmp/nonapi" | tr -d ' ')

echo "shared object: $so"
echo
echo "R entry points used (for information):"
# R_*/Rf_*/Rprintf-style names and all-caps macros-as-functions (SET_*, CAR, ...).
grep -E '^(R_|Rf_|Rp|REp|Rv|REv)|^[A-Z][A-Z0-9_]*$' "$tmp/undef" | sed 's/^/  /' || echo "  (none)"
echo

LC_ALL=C comm -12 "$tmp/undef" "$tmp/nonapi" > "$tmp/hits"
if [[ -s "$tmp/hits" ]]; then
  echo "non-API R entry points found ($(wc -l < "$tmp/hits" | tr -d ' ')):"
  sed 's/^/  /' "$tmp/hits"
  exit 1
fi

echo "no non-API R entry points (checked $n_undef undefined symbols against $n_names names from R 4.5's list)"
exit 0
