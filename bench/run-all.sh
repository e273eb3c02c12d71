#!/bin/sh
# Runs the mirai benchmarks (each compares against base R's PSOCK cluster in
# the same run). Figures swing 3-4x with machine load: read the ratios, and
# the load averages printed before and after each script.
# Usage: sh bench/run-all.sh   (from anywhere)
dir=$(cd "$(dirname "$0")" && pwd)
echo "== machine =="
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "nproc:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "memory:  $(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo)"
echo "R:       $(Rscript -e 'cat(R.version.string)' 2>/dev/null)"
echo "mirai:   $(Rscript -e 'cat(format(packageVersion("mirai")))' 2>/dev/null)"
echo "uptime: $(uptime)"
status=0
for s in roundtrip throughput large tls; do
  echo
  echo "---- $s.R ($(date -u '+%H:%M:%S') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg)) ----"
  Rscript "$dir/$s.R" || { echo "$s.R exited with status $?"; status=1; }
done
echo
echo "uptime: $(uptime)"
exit $status
