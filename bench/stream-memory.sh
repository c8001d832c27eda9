#!/usr/bin/env bash
# Streams a 1 GiB download and a 1 GiB upload through Stagedoor to an nginx upstream and
# samples Stagedoor's RSS every 100 ms, to show that memory stays flat while bodies stream.
# A benchmark, not a test: it prints what it measured and exits 0.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
BIN=${STAGEDOOR_BIN:-$ROOT/target/release/stagedoor}
SIZE_MIB=${SIZE_MIB:-1024}
UP_PORT=18090
SD_PORT=18092

command -v nginx >/dev/null || apt-get install -y nginx-light >&2
command -v curl >/dev/null || apt-get install -y curl >&2
command -v bc >/dev/null || apt-get install -y bc >&2
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/www" "$TMP/temp"
truncate -s "${SIZE_MIB}M" "$TMP/www/big"   # sparse: costs no disk
# nginx workers run unprivileged and must be able to read it.
chmod 755 "$TMP" "$TMP/www" && chmod 644 "$TMP/www/big"
cat > "$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $TMP/temp; proxy_temp_path $TMP/temp;
    fastcgi_temp_path $TMP/temp; uwsgi_temp_path $TMP/temp; scgi_temp_path $TMP/temp;
    server {
        listen 127.0.0.1:$UP_PORT;
        client_max_body_size 0;
        location /big { root $TMP/www; }
        # The body is read and thrown away before the answer.
        location /upload { return 200 "received\n"; }
    }
}
CONF
nginx -c "$TMP/nginx.conf" -p "$TMP" &
PIDS+=($!)
cat > "$TMP/stagedoor.toml" <<CONF
[server]
listen = "127.0.0.1:$SD_PORT"
[admin]
enabled = false
[log]
access_log = false
level = "warn"
[upstreams.bench]
url = "http://127.0.0.1:$UP_PORT"
CONF
env -u RUST_LOG "$BIN" --config "$TMP/stagedoor.toml" &
SD=$!
PIDS+=("$SD")
sleep 1

rss() { awk '/VmRSS/ {print $2}' "/proc/$SD/status"; }

# Runs a command while sampling RSS; prints "max_rss_kib seconds".
sampled() {
    local max=0 start end r
    start=$(date +%s.%N)
    "$@" &
    local job=$!
    while kill -0 "$job" 2>/dev/null; do
        r=$(rss); ((r > max)) && max=$r
        sleep 0.1
    done
    wait "$job"
    end=$(date +%s.%N)
    echo "$max $(echo "$end - $start" | bc)"
}

idle=$(rss)
# curl notes the status and the bytes it moved, so a short or failed transfer shows.
download() {
    curl -sS -o /dev/null -w '%{http_code} %{size_download}\n' \
        "http://127.0.0.1:$SD_PORT/big" >"$TMP/down.txt"
}
upload() {
    curl -sS -o /dev/null -w '%{http_code} %{size_upload}\n' \
        -T "$TMP/www/big" "http://127.0.0.1:$SD_PORT/upload" >"$TMP/up.txt"
}
read -r down_max down_s < <(sampled download)
read -r up_max up_s < <(sampled upload)
read -r down_status down_bytes <"$TMP/down.txt"
read -r up_status up_bytes <"$TMP/up.txt"
after=$(rss)

cat <<REPORT
# Streaming memory ($SIZE_MIB MiB each way through Stagedoor)

- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); machine: $(nproc) CPUs
- RSS idle before: $idle KiB; after both transfers: $after KiB

| transfer | status | bytes | seconds | MiB/s | max RSS during (KiB) | growth over idle (KiB) |
|---|---:|---:|---:|---:|---:|---:|
| download | $down_status | $down_bytes | $down_s | $(echo "$down_bytes / 1048576 / $down_s" | bc) | $down_max | $((down_max - idle)) |
| upload | $up_status | $up_bytes | $up_s | $(echo "$up_bytes / 1048576 / $up_s" | bc) | $up_max | $((up_max - idle)) |
REPORT
