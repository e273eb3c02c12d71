#!/bin/sh
# Vendor the Rust crate's dependencies into PKGDIR/rust/vendor.tar.xz, so that
# the source tarball installs offline (CRAN policy for Rust packages).
#
# Usage: sh tools/vendor.sh PKGDIR
#
# Not meant to be run by hand: `cleanup` calls it on R CMD build's private
# copy of the sources, so the vendored crates end up in the tarball and never
# in git. src/Makevars builds with `cargo build --offline` from the vendored
# crates whenever rust/vendor.tar.xz exists, and from crates.io / the cargo
# cache otherwise (a git checkout). Running it on a checkout is harmless but
# makes later installs of that checkout use the vendored crates until
# rust/vendor.tar.xz is deleted.
#
# What it does, in PKGDIR/rust:
#  1. `cargo vendor --versioned-dirs vendor`: every crate in Cargo.lock,
#     including dev-dependencies and other platforms' crates, because cargo
#     resolves the whole lock file even for `cargo build --lib`.
#  2. Stubs every crate that no Linux build of the library compiles: the
#     dev-dependencies (nng, whose nng-sys bundles NNG's C sources; proptest;
#     and their own dependencies) and the Windows/WASI-only crates
#     (windows-sys alone is 19 MB). A stub keeps its Cargo.toml (so
#     resolution and Cargo.lock stay as they are), its licence files and an
#     empty file at every target path its manifest declares; its checksum
#     file lists no files. The crates kept whole are those
#     `cargo tree -e normal,build` lists for the Linux targets below.
#     rust/Cargo.toml and rust/Cargo.lock are not modified.
#  3. Checks that the crates kept need no newer rustc than `configure`
#     demands (MIN_MAJOR.MIN_MINOR there), so its toolchain check stays true.
#  4. Writes inst/AUTHORS: name, version, licence and authors of each
#     vendored crate compiled into the package.
#  5. Packs vendor/ reproducibly into vendor.tar.xz (one archive: vendored
#     paths are long and numerous) and removes vendor/.
# Progress goes to stdout/stderr. Exit status is non-zero on any failure, and
# then no vendor.tar.xz is left behind.
set -eu

[ "$#" -eq 1 ] || { echo "usage: sh tools/vendor.sh PKGDIR" >&2; exit 2; }
PKGDIR=$(cd "$1" && pwd -P)
RUSTDIR="$PKGDIR/rust"
[ -f "$RUSTDIR/Cargo.toml" ] || { echo "vendor.sh: no $RUSTDIR/Cargo.toml" >&2; exit 1; }

PATH="$HOME/.cargo/bin:$PATH"
export PATH
command -v cargo >/dev/null 2>&1 || { echo "vendor.sh: cargo not found" >&2; exit 1; }

# Linux targets whose dependency sets are kept whole (cargo tree includes the
# host-side crates, proc-macros and build-dependencies, as well).
TARGETS="x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
i686-unknown-linux-gnu armv7-unknown-linux-gnueabihf
powerpc64le-unknown-linux-gnu s390x-unknown-linux-gnu
riscv64gc-unknown-linux-gnu loongarch64-unknown-linux-gnu
x86_64-unknown-linux-musl aarch64-unknown-linux-musl"

cd "$RUSTDIR"
ok=0
trap 'rm -rf "$RUSTDIR/vendor" "$RUSTDIR/vendor.keep" "$RUSTDIR/vendor.keep.tmp" "$RUSTDIR/vendor-config.toml"
      [ "$ok" = 1 ] || rm -f "$RUSTDIR/vendor.tar.xz"' EXIT
rm -rf vendor vendor.tar.xz

echo "vendor.sh: $(cargo --version)"
# ---- 1. vendor everything in the lock file --------------------------------
cargo vendor --versioned-dirs vendor >/dev/null

# Cargo configuration reading crates from vendor/ only, as Makevars does.
cat > vendor-config.toml <<EOF
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "$RUSTDIR/vendor"
EOF

# ---- 2. stub what no Linux build compiles ---------------------------------
targs=""
for t in $TARGETS; do targs="$targs --target $t"; done
# Lines look like "serde v1.0.229", "serde_derive v1.0.229 (proc-macro) (*)",
# "mirai v0.1.0 (/path)"; vendored directories are "<name>-<version>".
# shellcheck disable=SC2086
cargo tree --offline --config "$RUSTDIR/vendor-config.toml" -e normal,build $targs \
  --prefix none -f '{p}' > vendor.keep
awk 'NF >= 2 && $2 ~ /^v/ { print $1 "-" substr($2, 2) }' vendor.keep | sort -u > vendor.keep.tmp
mv vendor.keep.tmp vendor.keep
[ -s vendor.keep ] || { echo "vendor.sh: cargo tree listed no crates" >&2; exit 1; }

nkeep=0; nstub=0; stubbed=""
for d in vendor/*/; do
  d=${d%/}; crate=${d#vendor/}
  if grep -qxF "$crate" vendor.keep; then nkeep=$((nkeep + 1)); continue; fi
  sum=$(sed -n 's/.*"package":"\([0-9a-f]*\)".*/\1/p' "$d/.cargo-checksum.json")
  [ -n "$sum" ] || { echo "vendor.sh: no package checksum for $crate" >&2; exit 1; }
  # A [[bin]]/[[test]]/[[bench]]/[[example]] table without an explicit path
  # (a manifest published by an old cargo) names a file we cannot guess:
  # keep such a crate whole rather than risk a manifest cargo rejects.
  unguessable=$(awk '
    /^\[/ { if (t && !p) bad = 1; t = ($0 ~ /^\[\[(bin|test|bench|example)\]\]$/); p = 0; next }
    t && /^path *= *"/ { p = 1 }
    END { if (t && !p) bad = 1; print bad + 0 }
  ' "$d/Cargo.toml")
  if [ "$unguessable" = 1 ]; then
    echo "vendor.sh: keeping $crate whole (a target without an explicit path)"
    nkeep=$((nkeep + 1)); continue
  fi
  # Target paths and the build script the manifest declares: cargo checks
  # that they exist even for crates it never compiles.
  paths=$(awk '
    /^\[/ { intarget = ($0 == "[lib]" || $0 ~ /^\[\[(bin|test|bench|example)\]\]$/) }
    intarget && /^path *= *"/ { s = $0; sub(/^path *= *"/, "", s); sub(/".*/, "", s); print s }
    /^build *= *"/ { s = $0; sub(/^build *= *"/, "", s); sub(/".*/, "", s); print s }
  ' "$d/Cargo.toml")
  had_build=0; [ -f "$d/build.rs" ] && had_build=1
  find "$d" -mindepth 1 -maxdepth 1 ! -name Cargo.toml ! -iname 'licen[cs]e*' \
    ! -iname 'copying*' -exec rm -rf {} +
  mkdir -p "$d/src"; : > "$d/src/lib.rs"
  [ "$had_build" = 1 ] && : > "$d/build.rs"
  for p in $paths; do
    mkdir -p "$d/$(dirname "$p")"
    [ -f "$d/$p" ] || : > "$d/$p"
  done
  printf '{"files":{},"package":"%s"}' "$sum" > "$d/.cargo-checksum.json"
  nstub=$((nstub + 1)); stubbed="$stubbed $crate"
done
echo "vendor.sh: $nkeep crates vendored, $nstub stubbed (not compiled on Linux):$stubbed"

# With the stubs, every manifest must still parse and the lock still resolve.
cargo tree --offline --locked --config "$RUSTDIR/vendor-config.toml" \
  -e normal,build,dev --target all > /dev/null

# ---- 3. minimum rustc of what is compiled ---------------------------------
rv='s/^rust-version *= *"\([0-9][0-9]*\)\.\([0-9][0-9]*\).*"/\1 \2/p'
need=$( { for c in $(cat vendor.keep); do
            [ -f "vendor/$c/Cargo.toml" ] && sed -n "$rv" "vendor/$c/Cargo.toml"
          done; sed -n "$rv" Cargo.toml; } | sort -n -k1,1 -k2,2 | tail -n 1)
min_major=$(sed -n 's/^MIN_MAJOR=\([0-9]*\).*/\1/p' "$PKGDIR/configure")
min_minor=$(sed -n 's/^MIN_MINOR=\([0-9]*\).*/\1/p' "$PKGDIR/configure")
if [ -n "$need" ] && [ -n "$min_major" ] && [ -n "$min_minor" ]; then
  n_major=${need% *}; n_minor=${need#* }
  echo "vendor.sh: the crates compiled need rustc >= $n_major.$n_minor; configure checks for >= $min_major.$min_minor"
  if [ "$n_major" -gt "$min_major" ] ||
     { [ "$n_major" -eq "$min_major" ] && [ "$n_minor" -gt "$min_minor" ]; }; then
    echo "vendor.sh: ERROR: a crate compiled into the package needs rustc >= $n_major.$n_minor," >&2
    echo "  newer than the $min_major.$min_minor that configure (MIN_MAJOR, MIN_MINOR) and" >&2
    echo "  DESCRIPTION's SystemRequirements promise: raise both to $n_major.$n_minor." >&2
    exit 1
  fi
fi

# ---- 4. inst/AUTHORS ------------------------------------------------------
mkdir -p "$PKGDIR/inst"
{
  echo "The package's native core (rust/) links these Rust crates, shipped in"
  echo "rust/vendor.tar.xz. Name, version, licence and authors of each:"
  echo
  for c in $(cat vendor.keep); do
    f="vendor/$c/Cargo.toml"; [ -f "$f" ] || continue
    awk '
      /^\[/ { inpkg = ($0 == "[package]"); next }
      !inpkg { next }
      /^name *= *"/ { s = $0; sub(/^name *= *"/, "", s); sub(/".*/, "", s); name = s }
      /^version *= *"/ { s = $0; sub(/^version *= *"/, "", s); sub(/".*/, "", s); ver = s }
      /^license *= *"/ { s = $0; sub(/^license *= *"/, "", s); sub(/".*/, "", s); lic = s }
      /^authors *= *\[/ { inauth = 1 }
      inauth {
        s = $0
        while (match(s, /"[^"]*"/)) {
          a = substr(s, RSTART + 1, RLENGTH - 2); s = substr(s, RSTART + RLENGTH)
          sub(/ *<[^>]*>/, "", a); auth = auth (auth == "" ? "" : ", ") a
        }
        if ($0 ~ /\]/) inauth = 0
      }
      END {
        if (auth == "") auth = "the " name " developers"
        printf " - %s %s (%s): %s\n", name, ver, (lic == "" ? "see its licence file" : lic), auth
      }' "$f"
  done
} > "$PKGDIR/inst/AUTHORS"

# ---- 5. pack ---------------------------------------------------------------
# Reproducible archive: fixed order, times and owners.
tar --sort=name --mtime='1970-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner \
  -cf - vendor | xz -6 -T1 > vendor.tar.xz
ok=1
echo "vendor.sh: wrote rust/vendor.tar.xz ($(wc -c < vendor.tar.xz) bytes) and inst/AUTHORS"
