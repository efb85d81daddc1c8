#!/bin/bash
# `tidemark expire` (retention + garbage collection) over a synthetic repository, on a
# local folder and on S3 (s3s-fs). It prints figures and asserts nothing.
#
#   bench/expire-gc.sh [--backups N] [--segments N] [--chunks N] TIDEMARK_BINARY SYNTHETIC_REPO_BINARY
#
# SYNTHETIC_REPO_BINARY is `cargo build -p tidemark-store --example synthetic_repo`: it
# writes, through the store's own API, a stanza with N backups one hour apart (default
# 100; each a file list naming CHUNKS chunk blobs, default 20, half shared with an older
# backup) and N WAL segments (default 10,000; each its blob, claim and index entry). The
# blobs are tiny: expire and collection list, read records and remove objects, and that
# is what is measured. Building it directly is seconds, where real pushes of 10,000
# segments would be minutes and measure archive-push instead.
#
# Then, per backend: `expire` with retention_count = 10 and gc_grace = 0s (90 backups and
# about 9,000 segments go, with their blobs), timed under /usr/bin/time -v (wall time,
# peak RSS), and the S3 requests it sent (its --json `requests`); then a second `expire`
# that finds nothing to remove (the cost of the mark and of listing every shard alone).
# Work folder WORKDIR (default /tmp/tidemark-bench-expire), removed unless KEEP=1.
# BACKENDS=local (or s3) runs one backend only (default: both).
set -euo pipefail

backups=100
segments=10000
chunks=20
while [[ ${1:-} == --* ]]; do
    case $1 in
    --backups) backups=$2 ;;
    --segments) segments=$2 ;;
    --chunks) chunks=$2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
if [[ $# -ne 2 ]]; then
    echo "usage: $0 [--backups N] [--segments N] [--chunks N] TIDEMARK_BINARY SYNTHETIC_REPO_BINARY" >&2
    exit 2
fi
tidemark=$(realpath "$1")
synth=$(realpath "$2")
s3s=${S3S_FS:-$HOME/.cargo/bin/s3s-fs}
w=${WORKDIR:-/tmp/tidemark-bench-expire}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
s3pid=
cleanup() {
    [[ -n $s3pid ]] && kill "$s3pid" 2>/dev/null || true
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$w"
}
trap cleanup EXIT
rm -rf "$w"
mkdir -p "$w/local" "$w/s3/bench"

export TIDEMARK_S3_ENDPOINT=http://127.0.0.1:$port TIDEMARK_S3_ACCESS_KEY_ID=bench \
    TIDEMARK_S3_SECRET_ACCESS_KEY=benchsecret TIDEMARK_S3_PATH_STYLE=true TIDEMARK_S3_REGION=us-east-1
"$s3s" --host 127.0.0.1 --port "$port" --access-key bench --secret-key benchsecret "$w/s3" \
    >"$w/s3s.log" 2>&1 &
s3pid=$!
sleep 1

run_expire() { # url label
    local url=$1 label=$2
    /usr/bin/time -v -o "$w/time.txt" "$tidemark" --repo "$url" expire --json \
        --retention-count 10 --gc-grace 0s >"$w/out.json"
    python3 - "$w/out.json" "$w/time.txt" "$label" <<'PY'
import json, re, sys
out = json.load(open(sys.argv[1]))
t = open(sys.argv[2]).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1)
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
gc = out["gc"]
print(f"{sys.argv[3]:<28} {secs:7.2f} s  peak RSS {rss:6.1f} MiB  requests {out['requests'] if out['requests'] is not None else '-':>6}  "
      f"backups -{len(out['expired_backups'])}  WAL keys -{out['wal_keys']}  blobs {gc['blobs']} listed, -{gc['removed']}")
PY
}

for backend in ${BACKENDS:-local s3}; do
    if [[ $backend == local ]]; then url=file://$w/local; else url=s3://bench/repo; fi
    start=$(date +%s.%N)
    "$synth" "$url" "$backups" "$segments" "$chunks" >/dev/null
    built=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
    echo "$backend: synthetic repository of $backups backups, $segments segments built in $built s"
    run_expire "$url" "$backend: expire + GC"
    run_expire "$url" "$backend: again, nothing to do"
done
