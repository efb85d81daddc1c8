#!/usr/bin/env bash
# `tidemark plan` over a large catalog: time and peak memory, local folder and S3.
#
#   bench/plan.sh [SEGMENTS] [BACKUPS] [ROUNDS]      # defaults: 2000 50 5
#
# Writes a synthetic catalog (recovery/examples/plan_catalog.rs: SEGMENTS archived segments
# with content summaries on timeline 1, BACKUPS backups spread over them) into a local
# repository and into a local s3s-fs server, then runs `tidemark plan` as a whole process
# ROUNDS times against each, alternating local and S3, for three targets: a time in the
# middle of the archive, a restore point near the end, and `latest`. Prints each run
# (seconds, peak RSS from GNU time) and per repository and target the median and maximum.
# Prints figures; asserts nothing. Needs `cargo build --release` and s3s-fs (TESTING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
segments=${1:-2000}
backups=${2:-50}
rounds=${3:-5}
cargo build --quiet --release -p tidemark-agent
cargo build --quiet --release -p tidemark-recovery --example plan_catalog
target_dir=$(realpath "${CARGO_TARGET_DIR:-target}")
tm=$target_dir/release/tidemark
gen=$target_dir/release/examples/plan_catalog
s3s=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")

work=$(mktemp -d /tmp/tidemark-plan-bench.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
key=AK$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$work/s3/bench"
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$key" --secret-key "$secret" "$work/s3" \
  >/dev/null 2>&1 &
s3pid=$!
trap 'kill $s3pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export TIDEMARK_S3_ENDPOINT=http://127.0.0.1:$port TIDEMARK_S3_REGION=us-east-1 \
  TIDEMARK_S3_PATH_STYLE=true TIDEMARK_S3_ACCESS_KEY_ID=$key TIDEMARK_S3_SECRET_ACCESS_KEY=$secret

local_url=file://$work/local
s3_url=s3://bench/catalog
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "local: $("$gen" "$local_url" "$segments" "$backups")"
echo "s3:    $("$gen" "$s3_url" "$segments" "$backups")"

# The generator's commits: one second a segment from 2026-12-01T00:00:01Z.
mid="$(date -u -d "@$(( $(date -u -d '2026-12-01 00:00:00 UTC' +%s) + segments / 2 ))" '+%Y-%m-%d %H:%M:%S').5+00"
point=point-$(( (segments - 1) / 100 * 100 - 50 ))
targets=("--target-time=$mid" "--target-name=$point" "--target=latest")

results=$work/results
: >"$results"
for round in $(seq 1 "$rounds"); do
  for target in "${targets[@]}"; do
    for where in local s3; do
      url=$local_url; [ "$where" = s3 ] && url=$s3_url
      out=$( { /usr/bin/time -f '%e %M' "$tm" --repo "$url" plan "$target" >/dev/null; } 2>&1 ) ||
        { echo "plan failed ($where, $target): $out" >&2; exit 1; }
      read -r secs kib <<<"$(tail -1 <<<"$out")"
      echo "round $round $where $target: ${secs}s, $(( kib / 1024 )) MiB"
      printf '%s|%s|%s|%s\n' "$where" "$target" "$secs" "$kib" >>"$results"
    done
  done
done

echo
printf '%-6s %-40s %10s %10s %12s\n' repo target "median s" "max s" "max RSS MiB"
for target in "${targets[@]}"; do
  for where in local s3; do
    awk -F'|' -v w="$where" -v t="$target" '$1 == w && $2 == t { print $3, $4 }' "$results" |
      sort -n | awk -v w="$where" -v t="$target" '
        { s[NR] = $1; if ($1 > max) max = $1; if ($2 > rss) rss = $2 }
        END { printf "%-6s %-40s %10.3f %10.3f %12.1f\n", w, t, s[int((NR + 1) / 2)], max, rss / 1024 }'
  done
done
