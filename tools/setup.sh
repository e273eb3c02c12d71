#!/usr/bin/env bash
# Install the system dependencies of the mirai package, then build and install it.
#
# Usage: bash tools/setup.sh [--no-install] [--lib DIR]
#   --no-install  only install system packages and check the Rust toolchain;
#                 do not build/install the R package.
#   --lib DIR     install the package into library DIR instead of R's default
#                 library (then run R with R_LIBS=DIR).
#
# The package is installed as users get it: `R CMD build` makes the source
# tarball (building the vignettes, and vendoring the Rust crates into it),
# and `R CMD INSTALL` installs that tarball, so `vignette("mirai")` works
# afterwards (installing from this directory would leave the vignettes out).
# This compiles the crate twice (once for R CMD build to run the vignettes,
# once to install), a few minutes on two cores.
#
# Idempotent: apt is skipped entirely when every package is already installed,
# and each run rebuilds and reinstalls the package. Runs as root (uses sudo
# otherwise).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

do_install=1
lib=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --no-install) do_install=0 ;;
    --lib) shift; lib="${1:?--lib needs a directory}" ;;
    --lib=*) lib="${1#--lib=}" ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# R and the packages the tests, vignettes and benchmarks use; pandoc for the
# vignettes; libnng-dev for the Rust conformance tests (nng crate);
# iproute2/procps for the network-namespace and process tests.
# For R CMD build/check of the tarball (tools/test.sh, step 4): qpdf; tidy
# (HTML validation of the help pages); devscripts (checkbashisms, without
# which --as-cran gives a WARNING on configure/cleanup); xz-utils (packs and
# unpacks rust/vendor.tar.xz); util-linux (unshare, for the offline install).
# r-cran-pkgdown builds the documentation site; r-cran-xml2 (an external-
# pointer object) is the serialization vignette's example.
# The Shiny example app's test (test-shiny.R): Shiny serves inst/shiny/app.R,
# python3-selenium drives chromium through chromium-driver; jsonlite reads
# what the driver saw.
PKGS=(
  r-base-dev r-cran-testthat r-cran-later r-cran-promises r-cran-cli
  r-cran-rlang r-cran-foreach r-cran-doparallel r-cran-knitr r-cran-rmarkdown
  r-cran-roxygen2 r-cran-callr r-cran-processx r-cran-pkgdown r-cran-xml2 pandoc
  libnng-dev qpdf tidy devscripts xz-utils util-linux iproute2 procps
  r-cran-shiny r-cran-jsonlite chromium chromium-driver python3-selenium
  # Launcher tests (tests/testthat/test-launchers.R, helper-services.R): a real
  # sshd and ssh client on loopback (ssh_config, direct and tunnelled)...
  openssh-server openssh-client
  # ...a one-node Slurm cluster with munge (cluster_config with sbatch)...
  slurm-wlm munge
  # ...a one-node Grid Engine (cluster_config with qsub), and what Torque's
  # qsub over Slurm needs (slurm-wlm-torque itself is unpacked below: it
  # conflicts with gridengine-client, both ship /usr/bin/qsub)...
  gridengine-master gridengine-exec gridengine-client
  libslurm-perl libslurmdb-perl libswitch-perl
  # ...an HTTP launch API served by python3 (http_config), and the openssl
  # CLI, an independent HMAC-SHA256 to check the daemon's handshake against.
  python3 openssl
  # http_config() with https:// URLs (Suggests: curl).
  r-cran-curl
  # openssl (the CLI) also makes test-tls.R's user certificates and checks our
  # TLS host with its s_client; python3-websockets: test-ws.R's WebSocket
  # peers (a relay and an echo server we did not write).
  python3-websockets
  # Web APIs and the futureverse (test-plumber.R, test-future.R): plumber
  # (with curl for the requests), future (which brings parallelly),
  # future.apply and furrr.
  r-cran-plumber curl r-cran-future r-cran-future.apply r-cran-furrr
  # make_cluster() under snow's generics (test-cluster-dosnow.R): doSNOW
  # (which brings snow), whose shipped unit tests need RUnit.
  r-cran-dosnow r-cran-runit
  # Live relay of progress (test-relay.R): progressr's updates from tasks,
  # mirai_map() elements and futures on a make_cluster() cluster.
  r-cran-progressr
)

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing: ${missing[*]}"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    else
      echo "setup.sh: must run as root (or with sudo available) to install packages" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update
  # Install the full list: apt leaves already-installed packages alone.
  "${SUDO[@]}" apt-get install -y --no-install-recommends "${PKGS[@]}"
else
  echo "setup.sh: all system packages already installed"
fi

# slurm-wlm-torque (PBS/Torque-style qsub, qstat, qdel as perl wrappers over
# Slurm) unpacked into /opt/slurm-wlm-torque rather than installed, beside
# gridengine-client. Its qsub runs the sbatch (and salloc, srun) in its own
# directory, hence the links.
TORQUE=/opt/slurm-wlm-torque
if [ ! -x "$TORQUE/usr/bin/qsub" ] || [ ! -e "$TORQUE/usr/bin/sbatch" ]; then
  echo "setup.sh: unpacking slurm-wlm-torque into $TORQUE"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
  deb_dir=$(mktemp -d)
  chmod 755 "$deb_dir"  # apt-get download fetches as the _apt user
  (cd "$deb_dir" && apt-get download slurm-wlm-torque) || {
    "${SUDO[@]}" apt-get update && (cd "$deb_dir" && apt-get download slurm-wlm-torque)
  }
  "${SUDO[@]}" mkdir -p "$TORQUE"
  "${SUDO[@]}" dpkg -x "$deb_dir"/slurm-wlm-torque_*.deb "$TORQUE"
  rm -rf "$deb_dir"
  for c in sbatch salloc srun; do
    "${SUDO[@]}" ln -sf "/usr/bin/$c" "$TORQUE/usr/bin/$c"
  done
fi

CARGO="$HOME/.cargo/bin/cargo"
if [ ! -x "$CARGO" ]; then
  cat >&2 <<MSG
setup.sh: $CARGO not found.
  Rust must be installed with rustup (Debian's rustc is too old), e.g.:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy
MSG
  exit 1
fi
echo "setup.sh: $("$CARGO" --version)"

if [ "$do_install" -eq 1 ]; then
  install_args=(--no-multiarch)
  if [ -n "$lib" ]; then
    mkdir -p "$lib"
    lib=$(cd "$lib" && pwd)
    install_args+=(-l "$lib")
    # So that the check below finds the package there.
    export R_LIBS="$lib${R_LIBS:+:$R_LIBS}"
  fi
  repo=$(pwd)
  build_dir=$(mktemp -d)
  trap 'rm -rf "$build_dir"' EXIT
  echo "setup.sh: R CMD build (compiles the crate, builds the vignettes, vendors the crates)"
  t0=$SECONDS
  if ! (cd "$build_dir" && R CMD build "$repo") > "$build_dir/build.log" 2>&1; then
    echo "setup.sh: R CMD build failed; the end of its log:" >&2
    tail -n 40 "$build_dir/build.log" >&2
    exit 1
  fi
  tarball=$(ls "$build_dir"/mirai_*.tar.gz)
  echo "setup.sh: built $(basename "$tarball") in $((SECONDS - t0)) s; installing it"
  R CMD INSTALL "${install_args[@]}" "$tarball"
  Rscript -e 'v <- utils::vignette(package = "mirai")$results[, "Item"]' \
          -e 'cat("setup.sh: installed mirai", format(utils::packageVersion("mirai")), "with vignettes:", v, "\n")'
fi
