#!/usr/bin/env bash
# Benchmark: the same nginx upstream reached directly, through nginx proxy_pass and through
# Stagedoor. See bench/README.md. Progress goes to stderr, the Markdown report to stdout and
# bench/results/latest.md (every round, as measured: bench/results/latest-runs.tsv).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

BIN=${STAGEDOOR_BIN:-$ROOT/target/release/stagedoor}
SKIP_STAGEDOOR=${SKIP_STAGEDOOR:-0}
CONNS=${CONNS:-1 16 64}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}          # seconds of unrecorded wrk per target before each conns value
HOLD_CONNS=${HOLD_CONNS:-1000}

UPSTREAM_PORT=18080
NGINX_PORT=18081
STAGEDOOR_PORT=18082
STAGEDOOR_ADMIN_PORT=19180
STAGEDOOR_AUTH_PORT=18083
# The signed-in Stagedoor's second row asks for this Backstage API path.
BACKSTAGE_PATH=/api/catalog/entities
PROXY_CPU=0
LOAD_CPU=1                   # wrk and the upstream

WRAP=()                      # a command the proxies run under (bench/instructions.sh: valgrind)
TMP=""
STARTED_PIDS=()              # everything we started, stopped by cleanup

log() { printf '==> %s %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

cleanup() {
    set +e
    local i pid
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[i]}"
    done
    if [[ -n $TMP && ${KEEP_TMP:-0} != 1 ]]; then
        rm -rf "$TMP"
    elif [[ -n $TMP ]]; then
        log "kept $TMP"
    fi
}

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# A reaped pid can be reused by an unrelated process, so cleanup must not signal it.
forget_pid() {
    local i
    for i in "${!STARTED_PIDS[@]}"; do
        [[ ${STARTED_PIDS[i]} != "$1" ]] || unset 'STARTED_PIDS[i]'
    done
    STARTED_PIDS=("${STARTED_PIDS[@]}")
}

need() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null && return 0
    log "installing $pkg"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y "$pkg" >&2
    else
        sudo apt-get install -y "$pkg" >&2
    fi
}

preflight() {
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    PATH=$PATH:/usr/sbin:/sbin
    need nginx nginx-light
    need wrk wrk
    local cmd conns
    for conns in $CONNS; do
        [[ $conns =~ ^[1-9][0-9]*$ ]] || die "CONNS must be positive integers: $CONNS"
    done
    [[ $ROUNDS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] \
        || die "ROUNDS and DURATION must be positive integers, WARMUP a non-negative one"
    for cmd in taskset pgrep python3 getconf timeout curl openssl; do
        command -v "$cmd" >/dev/null || die "$cmd is required"
    done
    taskset -c "$PROXY_CPU,$LOAD_CPU" true 2>/dev/null \
        || die "needs CPUs $PROXY_CPU and $LOAD_CPU (one for the proxy, one for wrk and the upstream)"
    if [[ $SKIP_STAGEDOOR != 1 && ! -x $BIN ]]; then
        die "no Stagedoor binary at $BIN: build it (cargo build --release), set STAGEDOOR_BIN, or SKIP_STAGEDOOR=1"
    fi
    local port
    for port in "$UPSTREAM_PORT" "$NGINX_PORT" "$STAGEDOOR_PORT" "$STAGEDOOR_ADMIN_PORT" "$STAGEDOOR_AUTH_PORT"; do
        ! port_open "$port" || die "127.0.0.1:$port is already in use"
    done
    # 1000 held connections need more descriptors than the usual soft limit of 1024.
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    (($(ulimit -n) > 2 * HOLD_CONNS + 100)) || die "open-file limit $(ulimit -n) is too low"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if GET / on the port answers 200 with the upstream's "ok" body.
answers_ok() {
    local resp
    resp=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
        timeout 2 cat <&3
    ) || return 1
    [[ $resp == "HTTP/1.1 200"* && $resp == *$'\r\n\r\nok' ]]
}

wait_ready() {
    local name=$1 pid=$2 port=$3 log_file=$4 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log_file" >&2; die "$name exited during start"; }
        answers_ok "$port" && return 0
        sleep 0.1
    done
    tail -n 20 "$log_file" >&2
    die "$name did not answer 200 ok on 127.0.0.1:$port"
}

# render TEMPLATE OUT KEY=VALUE... replaces @KEY@ with VALUE.
render() {
    local template=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$template" >"$out"
}

# Without these, nginx creates its temp dirs under the compiled-in /var/lib/nginx.
write_temp_paths() {
    local dir=$1 module
    : >"$dir/temp_paths.conf"
    for module in client_body proxy fastcgi uwsgi scgi; do
        if [[ $module == client_body ]] || ! nginx -V 2>&1 | grep -q -- "--without-http_${module}_module"; then
            echo "${module}_temp_path $dir/${module}_temp;" >>"$dir/temp_paths.conf"
        fi
    done
}

# start_nginx NAME CPU TEMPLATE PORT; sets NGINX_PID.
start_nginx() {
    local name=$1 cpu=$2 template=$3 port=$4
    local dir=$TMP/$name
    mkdir -p "$dir"
    write_temp_paths "$dir"
    render "$template" "$dir/nginx.conf" DIR="$dir" PORT="$port" UPSTREAM_PORT="$UPSTREAM_PORT"
    taskset -c "$cpu" "${WRAP[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stderr.log" 2>&1 &
    NGINX_PID=$!
    STARTED_PIDS+=("$NGINX_PID")
    wait_ready "$name" "$NGINX_PID" "$port" "$dir/stderr.log"
    [[ $(<"$dir/nginx.pid") == "$NGINX_PID" ]] || die "$name: pid file does not match the started process"
}

# launch_stagedoor NAME TEMPLATE KEY=VALUE...: renders the config into $TMP/NAME and starts
# Stagedoor on the proxy CPU; sets LAUNCHED_PID.
launch_stagedoor() {
    local name=$1 template=$2 dir=$TMP/$1 var unset_env=(-u RUST_LOG)
    shift 2
    mkdir -p "$dir"
    render "$template" "$dir/stagedoor.toml" "$@" DIR="$dir"
    # Stagedoor reads STAGEDOOR_* as config overrides (STAGEDOOR_BIN would be an unknown key)
    # and RUST_LOG would override the log level, so the bench config must be all it sees.
    for var in $(compgen -e); do
        [[ $var == STAGEDOOR_* ]] && unset_env+=(-u "$var")
    done
    env "${unset_env[@]}" taskset -c "$PROXY_CPU" "${WRAP[@]}" "$BIN" --config "$dir/stagedoor.toml" \
        >"$dir/stderr.log" 2>&1 &
    LAUNCHED_PID=$!
    STARTED_PIDS+=("$LAUNCHED_PID")
}

start_stagedoor() {
    launch_stagedoor stagedoor "$BENCH_DIR/stagedoor.toml" \
        PORT="$STAGEDOOR_PORT" ADMIN_PORT="$STAGEDOOR_ADMIN_PORT" UPSTREAM_PORT="$UPSTREAM_PORT"
    STAGEDOOR_PID=$LAUNCHED_PID
    wait_ready stagedoor "$STAGEDOOR_PID" "$STAGEDOOR_PORT" "$TMP/stagedoor/stderr.log"
}

# A second Stagedoor with the development provider, and a session cookie for it: the signed-in
# row. Sets STAGEDOOR_AUTH_PID and SESSION_COOKIE.
start_stagedoor_auth() {
    local dir=$TMP/stagedoor-auth base location state i
    mkdir -p "$dir"
    # The private key of a Backstage static key store, as Backstage's own would be kept.
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$dir/backstage-key.pem" 2>/dev/null) || die "openssl could not make a P-256 key"
    launch_stagedoor stagedoor-auth "$BENCH_DIR/stagedoor-auth.toml" \
        PORT="$STAGEDOOR_AUTH_PORT" UPSTREAM_PORT="$UPSTREAM_PORT"
    STAGEDOOR_AUTH_PID=$LAUNCHED_PID
    base=http://127.0.0.1:$STAGEDOOR_AUTH_PORT
    for ((i = 0; i < 100; i++)); do
        port_open "$STAGEDOOR_AUTH_PORT" && break
        sleep 0.1
    done
    # The sign-in flow: start (a CSRF cookie and a state), then the development form.
    location=$(curl -s -c "$dir/jar" -o /dev/null -w '%{redirect_url}' "$base/oauth2/start?rd=/")
    state=${location##*state=}
    [[ -n $state && $state != "$location" ]] || die "stagedoor-auth: no sign-in state ($location)"
    curl -s -b "$dir/jar" -c "$dir/jar" -o /dev/null --data "state=$state" \
        --data-urlencode "user=alice@example.com" "$base/oauth2/dev"
    SESSION_COOKIE=$(awk -F'\t' '$6 ~ /^_stagedoor(_[0-9]+)?$/ { printf "%s%s=%s", sep, $6, $7; sep = "; " }' "$dir/jar")
    [[ -n $SESSION_COOKIE ]] || die "stagedoor-auth: sign-in gave no session cookie"
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $SESSION_COOKIE" "$base/")
    [[ $status == 200 ]] || die "stagedoor-auth: a signed-in request got $status"
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $SESSION_COOKIE" "$base$BACKSTAGE_PATH")
    [[ $status == 200 ]] || die "stagedoor-auth: a signed-in request to $BACKSTAGE_PATH got $status"
}

# An nginx master and its workers; Stagedoor is one process (its threads are in its stat).
proxy_pids() {
    # shellcheck disable=SC2046  # one pid per word
    case $1 in
        nginx) echo "$NGINX_PROXY_PID" $(pgrep -P "$NGINX_PROXY_PID") ;;
        stagedoor) echo "$STAGEDOOR_PID" ;;
        stagedoor-auth | stagedoor-backstage) echo "$STAGEDOOR_AUTH_PID" ;;
    esac
}

# Sum of utime+stime in clock ticks. The command name in field 2 may contain spaces, so
# fields are counted after its closing parenthesis: utime and stime become 12 and 13.
cpu_ticks() {
    local pid total=0 stat
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        stat=${stat##*) }
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$stat")))
    done
    echo "$total"
}

rss_kib() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")))
    done
    echo "$total"
}

# hold_batch NAME PORT TAG: opens $HOLD_CONNS keep-alive connections (one request each) that
# stay open in the background, waits until they are all answered, then 2 s more (so that
# Stagedoor's idle connections are parked). Sets HELD_PID.
hold_batch() {
    local name=$1 port=$2 out=$TMP/hold.$1.$3 i
    : >"$out"
    python3 "$BENCH_DIR/hold_conns.py" --port "$port" --count "$HOLD_CONNS" --hold 300 >"$out" 2>&1 &
    HELD_PID=$!
    STARTED_PIDS+=("$HELD_PID")
    for ((i = 0; i < 600; i++)); do
        grep -q '^ready' "$out" && break
        kill -0 "$HELD_PID" 2>/dev/null || { cat "$out" >&2; die "holding connections to $name failed"; }
        sleep 0.1
    done
    grep -q '^ready' "$out" || die "holding $HOLD_CONNS connections to $name timed out"
    sleep 2
}

# release_batch NAME TAG PID: closes a held batch; sets STILL_OPEN to how many connections the
# proxy had kept. (Not a command substitution: a subshell cannot wait for the holder.)
release_batch() {
    local name=$1 out=$TMP/hold.$1.$2 pid=$3
    kill -TERM "$pid"
    wait "$pid" || die "connection holder for $name failed: $(cat "$out")"
    forget_pid "$pid"
    STILL_OPEN=$(awk '/^open/ { print $2 }' "$out")
}

# measure_memory NAME PORT: appends "NAME idle first second still_open" to $TMP/memory.tsv:
# RSS idle, with one batch of idle connections, and with a second batch on top. The first
# batch's growth includes buffers that idle connections later give back; the second batch
# shows the steady cost of one more idle connection.
measure_memory() {
    local name=$1 port=$2 idle first second open_a open_b pid_a pid_b
    # shellcheck disable=SC2046  # word splitting of the pid list is intended
    idle=$(rss_kib $(proxy_pids "$name"))
    hold_batch "$name" "$port" a
    pid_a=$HELD_PID
    # shellcheck disable=SC2046
    first=$(rss_kib $(proxy_pids "$name"))
    hold_batch "$name" "$port" b
    pid_b=$HELD_PID
    # shellcheck disable=SC2046
    second=$(rss_kib $(proxy_pids "$name"))
    release_batch "$name" a "$pid_a"
    open_a=$STILL_OPEN
    release_batch "$name" b "$pid_b"
    open_b=$STILL_OPEN
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$idle" "$first" "$second" "$((open_a + open_b))" >>"$TMP/memory.tsv"
    log "$name RSS: idle ${idle} KiB, +$HOLD_CONNS connections ${first} KiB, +$HOLD_CONNS more ${second} KiB ($((open_a + open_b)) still open)"
    ((open_a + open_b == 2 * HOLD_CONNS)) || log "warning: $name closed some held connections; its KiB/conn is unreliable"
}

# Prints "req/s p50_us p99_us requests errors" from wrk --latency output.
parse_wrk() {
    awk '
        function us(t,   n, unit) {
            n = t; sub(/[a-z]+$/, "", n)
            unit = t; sub(/^[0-9.]+/, "", unit)
            if (unit == "us") return n
            if (unit == "ms") return n * 1e3
            if (unit == "s") return n * 1e6
            if (unit == "m") return n * 6e7
            if (unit == "h") return n * 3.6e9
            print "unknown latency unit in " t > "/dev/stderr"; failed = 1
        }
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        $2 == "requests" && $3 == "in" { requests = $1 }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
        END {
            if (failed || rps == "" || p50 == "" || p99 == "" || requests == "") exit 1
            printf "%s %s %s %s %d\n", rps, p50, p99, requests, errors
        }'
}

# bench_one TARGET PORT CONNS SECONDS [ROUND]: without ROUND it is a warm-up and not recorded.
bench_one() {
    local target=$1 port=$2 conns=$3 seconds=$4 round=${5:-} pids=() before after out parsed
    local rps p50 p99 requests errors cpu_us=NA
    [[ $target == direct ]] || read -r -a pids <<<"$(proxy_pids "$target")"
    ((${#pids[@]} == 0)) || before=$(cpu_ticks "${pids[@]}")
    local headers=() path=/
    case $target in
        stagedoor-auth) headers=(-H "Cookie: $SESSION_COOKIE") ;;
        stagedoor-backstage) headers=(-H "Cookie: $SESSION_COOKIE") path=$BACKSTAGE_PATH ;;
    esac
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${seconds}s" --latency "${headers[@]}" "http://127.0.0.1:$port$path") \
        || die "wrk against $target failed"
    ((${#pids[@]} == 0)) || after=$(cpu_ticks "${pids[@]}")
    [[ -n $round ]] || return 0
    parsed=$(parse_wrk <<<"$out") || { printf '%s\n' "$out" >&2; die "could not parse wrk output"; }
    read -r rps p50 p99 requests errors <<<"$parsed"
    if ((${#pids[@]} > 0 && requests > 0)); then
        cpu_us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" \
            'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$conns" "$target" "$round" "$rps" "$p50" "$p99" "$requests" "$cpu_us" "$errors" >>"$TMP/runs.tsv"
    log "c=$conns round $round $target: $rps req/s, p50 ${p50}us, p99 ${p99}us, cpu ${cpu_us}us/req, errors $errors"
}

run_benchmarks() {
    local conns round target
    for conns in $CONNS; do
        if ((WARMUP > 0)); then
            for target in "${TARGETS[@]}"; do
                bench_one "$target" "${PORT_OF[$target]}" "$conns" "$WARMUP"
            done
        fi
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in "${TARGETS[@]}"; do
                bench_one "$target" "${PORT_OF[$target]}" "$conns" "$DURATION" "$round"
            done
        done
    done
}

report() {
    local model stagedoor_version
    model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    stagedoor_version=skipped
    if [[ $SKIP_STAGEDOOR != 1 ]]; then
        stagedoor_version="$("$BIN" --version 2>/dev/null || echo unknown), $(awk '/^Threads:/ { print $2 }' \
            "/proc/$STAGEDOOR_PID/status") threads"
    fi
    cat <<EOF
# Stagedoor benchmark

- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')
- machine: $(nproc) CPUs, ${model:-unknown}, Linux $(uname -r)
- nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'); wrk: $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')
- stagedoor: $stagedoor_version; commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty tree)')
- setup: proxy on CPU $PROXY_CPU; wrk -t1 and upstream nginx on CPU $LOAD_CPU; ${DURATION}s per run, median of $ROUNDS rounds, targets interleaved

## Throughput and latency

| conns | target | req/s | p50 (µs) | p99 (µs) | proxy CPU (µs/req) | errors |
|---:|---|---:|---:|---:|---:|---:|
EOF
    awk -F'\t' -v conns_list="$CONNS" -v targets="${TARGETS[*]}" -v rounds="$ROUNDS" \
        -v backstage_path="$BACKSTAGE_PATH" '
        function median(key,   n, i, j, x, a) {
            n = count[key]
            for (i = 1; i <= n; i++) a[i] = value[key, i]
            for (i = 2; i <= n; i++) {
                x = a[i]
                for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]
                a[j + 1] = x
            }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function add(key, v) { value[key, ++count[key]] = v }
        function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "n/a" }
        # The median over rounds of (the target / nginx) in the same round, for field f.
        function paired(c, target, f,   r, key, a, b) {
            key = c SUBSEP target SUBSEP f SUBSEP "paired"
            for (r = 1; r <= rounds; r++) {
                a = round_value[c, target, r, f]; b = round_value[c, "nginx", r, f]
                if (a != "" && a != "NA" && b != "" && b != "NA" && b + 0 > 0) add(key, a / b)
            }
            return count[key] ? sprintf("%.2f", median(key)) : "n/a"
        }
        # The table of one target against nginx, a row per connection count.
        function ratios(target,   i, s, n) {
            print "| conns | req/s | p99 | CPU per request | paired: req/s | p99 | CPU per request |"
            print "|---:|---:|---:|---:|---:|---:|---:|"
            for (i = 1; i <= nc; i++) {
                s = cs[i] SUBSEP target; n = cs[i] SUBSEP "nginx"
                printf "| %s | %s | %s | %s | %s | %s | %s |\n", cs[i], ratio(rps[s], rps[n]),
                    ratio(p99[s], p99[n]), ratio(cpu[s], cpu[n]), paired(cs[i], target, 4),
                    paired(cs[i], target, 6), paired(cs[i], target, 8)
            }
        }
        {
            round_value[$1, $2, $3, 4] = $4; round_value[$1, $2, $3, 6] = $6
            round_value[$1, $2, $3, 8] = $8
            k = $1 SUBSEP $2
            add(k SUBSEP "rps", $4); add(k SUBSEP "p50", $5); add(k SUBSEP "p99", $6)
            if ($8 != "NA") add(k SUBSEP "cpu", $8)
            errors[k] += $9
        }
        END {
            nc = split(conns_list, cs, " "); nt = split(targets, ts, " ")
            for (i = 1; i <= nc; i++) {
                for (j = 1; j <= nt; j++) {
                    k = cs[i] SUBSEP ts[j]
                    rps[k] = median(k SUBSEP "rps"); p99[k] = median(k SUBSEP "p99")
                    cpu[k] = count[k SUBSEP "cpu"] ? median(k SUBSEP "cpu") : ""
                    printf "| %s | %s | %.0f | %.0f | %.0f | %s | %d |\n", cs[i], ts[j], rps[k],
                        median(k SUBSEP "p50"), p99[k], cpu[k] == "" ? "–" : sprintf("%.2f", cpu[k]), errors[k]
                }
            }
            if (targets !~ /stagedoor/) exit
            print "\n## Stagedoor / nginx\n"
            print "Above 1 is better for req/s; below 1 is better for p99 and CPU per request. The first"
            print "three columns divide the medians; the paired ones are the medians of the ratios within"
            print "each round, where Stagedoor ran right after nginx, so that drift between rounds cancels.\n"
            ratios("stagedoor")
            if (targets !~ /stagedoor-auth/) exit
            print "\n## Stagedoor signed in / nginx\n"
            print "Each request carries a session cookie: decrypted, judged by the policy, identity headers"
            print "and the signed identity token added (nginx proxies without any of that).\n"
            ratios("stagedoor-auth")
            print "\n## Stagedoor signed in, with a Backstage user token / nginx\n"
            print "As above, to a Backstage API path (" backstage_path "): a Backstage user token is added too,"
            print "as `Authorization: Bearer` (the `[backstage]` mode).\n"
            ratios("stagedoor-backstage")
        }' "$TMP/runs.tsv"
    cat <<EOF

## Memory (RSS; nginx is master + worker)

Two batches of $HOLD_CONNS keep-alive connections; each connection sends one request, then
idles. RSS is read 2 s after each batch is answered. The first batch's growth includes the
buffers its connections held while busy; the second shows what one more idle connection costs
(Stagedoor parks idle HTTP/1.1 connections after 1 s and reuses what they gave back).

| proxy | idle (KiB) | + $HOLD_CONNS conns (KiB) | + $HOLD_CONNS more (KiB) | KiB per conn, first | KiB per conn, second | conns still open |
|---|---:|---:|---:|---:|---:|---:|
EOF
    awk -F'\t' -v n="$HOLD_CONNS" \
        '{ printf "| %s | %d | %d | %d | %.1f | %.1f | %d |\n", $1, $2, $3, $4, ($3 - $2) / n, ($4 - $3) / n, $5 }' "$TMP/memory.tsv"
}

main() {
    preflight
    CLK_TCK=$(getconf CLK_TCK)
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/stagedoor-bench.XXXXXX")

    TARGETS=(direct nginx)
    declare -gA PORT_OF=([direct]=$UPSTREAM_PORT [nginx]=$NGINX_PORT [stagedoor]=$STAGEDOOR_PORT)

    log "starting upstream nginx on CPU $LOAD_CPU, port $UPSTREAM_PORT"
    start_nginx upstream "$LOAD_CPU" "$BENCH_DIR/nginx-upstream.conf" "$UPSTREAM_PORT"
    log "starting nginx proxy on CPU $PROXY_CPU, port $NGINX_PORT"
    start_nginx proxy "$PROXY_CPU" "$BENCH_DIR/nginx-proxy.conf" "$NGINX_PORT"
    NGINX_PROXY_PID=$NGINX_PID
    measure_memory nginx "$NGINX_PORT"

    if [[ $SKIP_STAGEDOOR != 1 ]]; then
        log "starting $BIN on CPU $PROXY_CPU, port $STAGEDOOR_PORT"
        start_stagedoor
        TARGETS+=(stagedoor)
        measure_memory stagedoor "$STAGEDOOR_PORT"
        log "starting a signed-in Stagedoor on CPU $PROXY_CPU, port $STAGEDOOR_AUTH_PORT"
        start_stagedoor_auth
        TARGETS+=(stagedoor-auth stagedoor-backstage)
        PORT_OF[stagedoor-auth]=$STAGEDOOR_AUTH_PORT
        PORT_OF[stagedoor-backstage]=$STAGEDOOR_AUTH_PORT
    else
        log "SKIP_STAGEDOOR=1: leaving Stagedoor out"
    fi

    : >"$TMP/runs.tsv"
    run_benchmarks

    mkdir -p "$BENCH_DIR/results"
    # Every round as measured (conns, target, round, req/s, p50, p99, requests, CPU µs per
    # request, errors), also under the run's time, for pooling rounds across runs
    # (bench/pooled.sh).
    cp "$TMP/runs.tsv" "$BENCH_DIR/results/latest-runs.tsv"
    cp "$TMP/runs.tsv" "$BENCH_DIR/results/runs-$(date -u +%Y%m%d-%H%M%S).tsv"
    report | tee "$BENCH_DIR/results/latest.md"
}

# Sourced by bench/instructions.sh for its functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
