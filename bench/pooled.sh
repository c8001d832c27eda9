#!/usr/bin/env bash
# Pools the rounds of several bench/run.sh runs (their runs-*.tsv files) and prints, for each
# Stagedoor row and connection count, the median and quartiles of the ratios to nginx within
# each round (the report's "paired" columns, over all rounds of all the files).
#
#   bench/pooled.sh bench/results/runs-*.tsv
set -euo pipefail
(($# > 0)) || { echo "usage: $0 RUNS.tsv..." >&2; exit 2; }
awk -F'\t' '
    # The q-quantile of a[1..n] (sorted in place), interpolated between closest ranks.
    function quantile(a, n, q,   i, j, x, h) {
        for (i = 2; i <= n; i++) {
            x = a[i]
            for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]
            a[j + 1] = x
        }
        h = (n - 1) * q + 1
        return a[int(h)] + (h - int(h)) * (a[int(h) + 1] - a[int(h)])
    }
    FNR == 1 { file++ }
    {
        run = file SUBSEP $1 SUBSEP $3
        rps[run, $2] = $4; p99[run, $2] = $6; cpu[run, $2] = $8
        rounds[run] = 1; conns[$1] = 1; if ($2 ~ /^stagedoor/) targets[$2] = 1
    }
    function row(t, c, name, values,   run, parts, n, a, v, b) {
        n = 0
        for (run in rounds) {
            split(run, parts, SUBSEP)
            if (parts[2] != c) continue
            v = values[run, t]; b = values[run, "nginx"]
            if (v == "" || v == "NA" || b == "" || b == "NA" || b + 0 <= 0) continue
            a[++n] = v / b
        }
        if (n == 0) return ""
        return sprintf("%s %.2f (%.2f to %.2f)", name, quantile(a, n, 0.5), quantile(a, n, 0.25), quantile(a, n, 0.75))
    }
    END {
        print "| row | conns | rounds | paired ratios to nginx: median (middle half) |"
        print "|---|---:|---:|---|"
        for (t in targets) for (c in conns) {
            n = 0
            for (run in rounds) { split(run, parts, SUBSEP); if (parts[2] == c && cpu[run, t] != "") n++ }
            printf "| %s | %s | %d | %s; %s; %s |\n", t, c, n, row(t, c, "req/s", rps), row(t, c, "p99", p99), row(t, c, "CPU", cpu)
        }
    }' "$@" | { read -r h; read -r r; echo "$h"; echo "$r"; sort -t'|' -k2,2 -k3,3n; }
