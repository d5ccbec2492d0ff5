#!/usr/bin/env bash
# Pools the create+start samples of several hack/bench/lifecycle.sh runs
# (their saved output) and prints each row's median and p90 over all of
# them, per runtime. One run's median of 8 moves by tens of milliseconds
# with the host's load; a median over several runs is the figure to quote.
#   hack/bench/pool.sh run1.log run2.log ...
# Rows: createstart and restart, each sample net of crictl's start-up as
# measured in its own run (see lifecycle-vm.sh). Not a test: nothing here
# asserts a time.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: hack/bench/pool.sh LOG..." >&2; exit 2; }
grep -ah "BERTH-BENCH: samples " "$@" | awk '
    { sub(/\r$/, "")  # a VM serial console ends lines with CR LF
      row = $3; rt = $4; sub(/:$/, "", rt); k = row " " rt
      for (i = 5; i <= NF; i++) if ($i ~ /^-?[0-9]+$/) v[k, ++n[k]] = $i
      runs[k]++ }
    END {
        for (k in n) {
            m = n[k]
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
                if (v[k, j] < v[k, i]) { t = v[k, i]; v[k, i] = v[k, j]; v[k, j] = t }
            med = (m % 2) ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2
            p90 = v[k, int(m * 0.9 + 0.999)]
            printf "pooled %s runs=%d n=%d median=%s p90=%s\n", k, runs[k], m, med, p90
        }
    }' | sort
