#!/bin/bash
# Alternating restores of one backup by several tidemark builds (and, optionally,
# pgBackRest), for comparing restore changes on a noisy machine. It prints figures and
# asserts nothing.
#
#   bench/restore-ab.sh [--rounds N] TIDEMARK_BINARY... [pgbackrest]
#
# It uses the repositories that `bench/backup.py` leaves in its work folder: set
# TM_REPO and PGBR_REPO to a tidemark and a pgBackRest repository of the same database
# (defaults: $WORKDIR/runs/exp/{tm,pgbr}, WORKDIR=/tmp/tidemark-bench-backup). It runs as
# the bench user (BENCH_UID, default 1001) and must be started as root.
#
# Each restore goes into a new folder under $WORKDIR/runs/ab, and all of them are deleted
# only at the end. ext4 without a journal skips inodes freed in the last 60 s when it
# creates files, so restoring into a folder deleted just before would measure that
# instead. Before each restore it syncs, waits SETTLE seconds (default 3) and reads the
# repositories and the programs back into the page cache, because this VM's DAMON reclaim
# evicts idle pages after about a minute. Each line shows: round, build, wall seconds,
# user and system CPU seconds, and from /proc/diskstats the write requests, the device's
# busy milliseconds and the cache flushes.
#
# pgBackRest does badly in this loop when the folders pile up (its system CPU grows from
# 0.6 s to 2.3 s over six rounds), so compare it with `bench/backup.py`.
set -euo pipefail

rounds=3
if [[ ${1:-} == --rounds ]]; then
    rounds=$2
    shift 2
fi
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [--rounds N] TIDEMARK_BINARY... [pgbackrest]" >&2
    exit 2
fi
workdir=${WORKDIR:-/tmp/tidemark-bench-backup}
tm_repo=${TM_REPO:-$workdir/runs/exp/tm}
pgbr_repo=${PGBR_REPO:-$workdir/runs/exp/pgbr}
uid=${BENCH_UID:-1001}
out=$workdir/runs/ab
disk=$(lsblk -no pkname "$(findmnt -no source --target "$workdir")" 2>/dev/null || true)
disk=${disk:-$(basename "$(findmnt -no source --target "$workdir")")}

rm -rf "$out"
mkdir -p "$out"
chown "$uid" "$out"
trap 'rm -rf "$out"' EXIT

diskstats() { awk -v d="$disk" '$3 == d { print $8, $13, $19 }' /proc/diskstats; }

for round in $(seq 1 "$rounds"); do
    for build in "$@"; do
        target=$out/r-$round-$(basename "$build")
        if [[ $build == pgbackrest ]]; then
            cmd=(pgbackrest "--config=$workdir/pgbackrest.conf" "--repo1-path=$pgbr_repo"
                --stanza=main "--pg1-path=$target" --process-max=2 restore)
        else
            cmd=("$build" --repo "file://$tm_repo" --stanza main restore --pgdata "$target")
        fi
        sync
        sleep "${SETTLE:-3}"
        find "$tm_repo" "$pgbr_repo" -type f -exec cat {} + >/dev/null 2>&1 || true
        cat "$(command -v "${cmd[0]}")" >/dev/null
        read -r w0 b0 f0 < <(diskstats)
        times=$(setpriv --reuid="$uid" --regid="$uid" --init-groups env HOME=/tmp \
            /usr/bin/time -f '%e %U %S' "${cmd[@]}" 2>&1 >/dev/null | tail -1)
        read -r w1 b1 f1 < <(diskstats)
        echo "$round $(basename "$build") $times | writes $((w1 - w0)) busy_ms $((b1 - b0)) flushes $((f1 - f0))"
    done
done
