#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind (cachegrind), for nginx doing plain
# proxy_pass and for Stagedoor plain, signed in, and signed in on a Backstage API path (with a
# Backstage user token): the same setup as bench/run.sh, but a
# count that does not move with the VM's noise, for judging a change that CPU time cannot
# resolve. Kernel work is not counted (see bench/README.md).
#
# Each proxy runs under cachegrind twice, for INSTR_SECONDS and for twice as long, at 16
# connections; the difference between the two runs' counts over the difference between their
# requests is the cost of a request, without start-up (a signed-in Stagedoor's first signature
# seeds its random generator: about 420 million instructions).
set -euo pipefail

# shellcheck source=bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"

INSTR_SECONDS=${INSTR_SECONDS:-4}
INSTR_CONNS=${INSTR_CONNS:-16}

# count NAME PORT SECONDS: starts NAME under cachegrind, runs wrk, stops it; sets REQUESTS
# and INSTRUCTIONS.
count() {
    local name=$1 port=$2 seconds=$3 header="" path=/ out pid
    local dir=$TMP/$name-$seconds
    mkdir -p "$dir"
    # nginx's worker runs as another user (nobody) and writes its count here too.
    chmod 711 "$TMP"
    chmod 1777 "$dir"
    WRAP=(valgrind --tool=cachegrind --cache-sim=no --trace-children=yes
        "--cachegrind-out-file=$dir/cg.%p")
    case $name in
        nginx)
            start_nginx "proxy-$seconds" "$PROXY_CPU" "$BENCH_DIR/nginx-proxy.conf" "$port"
            pid=$NGINX_PID
            ;;
        stagedoor)
            start_stagedoor
            pid=$STAGEDOOR_PID
            ;;
        stagedoor-auth | stagedoor-backstage)
            start_stagedoor_auth
            pid=$STAGEDOOR_AUTH_PID
            header="Cookie: $SESSION_COOKIE"
            [[ $name == stagedoor-auth ]] || path=$BACKSTAGE_PATH
            ;;
    esac
    WRAP=()
    local args=(-t1 -c"$INSTR_CONNS" -d"${seconds}s")
    [[ -z $header ]] || args+=(-H "$header")
    out=$(taskset -c "$LOAD_CPU" wrk "${args[@]}" "http://127.0.0.1:$port$path") \
        || die "wrk against $name failed"
    ! grep -q 'Non-2xx' <<<"$out" || die "$name answered with errors: $out"
    REQUESTS=$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")
    local workers child i
    workers=$(pgrep -P "$pid" || true)
    stop_pid "$pid" || true   # it may have exited already (errexit is for our own steps)
    forget_pid "$pid"
    # nginx's master and worker each write a file, the worker maybe after the master exits.
    for child in $workers; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$child" 2>/dev/null || break
            sleep 0.1
        done
    done
    INSTRUCTIONS=$(cat "$dir"/cg.* | awk '/^summary:/ { sum += $2 } END { print sum }')
}

instructions_main() {
    preflight
    need valgrind valgrind
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/stagedoor-instr.XXXXXX")
    log "starting upstream nginx on CPU $LOAD_CPU, port $UPSTREAM_PORT"
    start_nginx upstream "$LOAD_CPU" "$BENCH_DIR/nginx-upstream.conf" "$UPSTREAM_PORT"

    local name port requests instructions
    printf '| proxy | instructions per request |\n|---|---:|\n'
    for name in nginx stagedoor stagedoor-auth stagedoor-backstage; do
        case $name in
            nginx) port=$NGINX_PORT ;;
            stagedoor) port=$STAGEDOOR_PORT ;;
            stagedoor-auth | stagedoor-backstage) port=$STAGEDOOR_AUTH_PORT ;;
        esac
        log "$name: ${INSTR_SECONDS}s and $((2 * INSTR_SECONDS))s under cachegrind"
        count "$name" "$port" "$INSTR_SECONDS"
        requests=$REQUESTS instructions=$INSTRUCTIONS
        count "$name" "$port" "$((2 * INSTR_SECONDS))"
        ((REQUESTS > requests)) || die "$name: the longer run served no more requests"
        log "$name: $requests requests, $instructions instructions; $REQUESTS, $INSTRUCTIONS"
        printf '| %s | %s |\n' "$name" "$(awk -v a="$instructions" -v b="$INSTRUCTIONS" \
            -v m="$requests" -v n="$REQUESTS" 'BEGIN { printf "%.0f", (b - a) / (n - m) }')"
    done
}

instructions_main "$@"
