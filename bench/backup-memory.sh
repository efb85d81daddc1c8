#!/bin/bash
# What a backup holds in memory for the previous backup's chunks, measured: the bench
# database (bench/backup.py's, which must have run once) is backed up into a scratch
# repository three times, with GNU time's peak RSS for each:
#   1. a full backup (no previous backup);
#   2. a second one (every chunk known from the first);
#   3. one whose previous backup is a synthetic list of SIZE_GIB in 1 GiB files
#      (examples/list_memory; its chunks are not stored, so nothing matches and every
#      chunk is compressed again: only the memory figure means anything).
#
#   bench/backup-memory.sh [SIZE_GIB]        (default 4096: 4 Mi chunks)
#
# Run as root after `cargo build --release -p tidemark-agent` and
# `cargo build --release -p tidemark-recovery --example list_memory`. The scratch
# repository is /tmp/tidemark-bench-memory, removed at the end; the server's
# archive_command points at it while this runs (bench/backup.py sets its own).
set -euo pipefail
size_gib=${1:-4096}
root=$(cd "$(dirname "$0")/.." && pwd)
work=/tmp/tidemark-bench-backup
pgbin=/usr/lib/postgresql/15/bin
user=tidemark-bench
port=55990
scratch=/tmp/tidemark-bench-memory
[ -f "$work/pg/PG_VERSION" ] || { echo "backup-memory: no bench database in $work/pg: run bench/backup.py once" >&2; exit 2; }
for bin in "$root/target/release/tidemark" "$root/target/release/examples/list_memory"; do
  [ -x "$bin" ] || { echo "backup-memory: $bin is missing: build it first" >&2; exit 2; }
done

rm -rf "$scratch"; mkdir -p "$scratch/repo"
cp "$root/target/release/tidemark" "$root/target/release/examples/list_memory" "$scratch/"
chown -R "$user" "$scratch"
as_user() { runuser -u "$user" -- "$@"; }
stop() { as_user "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true; }
trap 'stop; rm -rf "$scratch"' EXIT
stop
as_user "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start \
  -o "-k $work/sock -p $port -c listen_addresses=127.0.0.1 -c autovacuum=off" >/dev/null
tm="$scratch/tidemark --repo file://$scratch/repo --stanza main"
# Only init creates a repository (and the stanza): before archive_command points at it.
runuser -u "$user" -- $tm --pgdata "$work/pg" init --offline >/dev/null
psql_() { as_user psql -h "$work/sock" -p "$port" -qAt -c "$1" postgres; }
psql_ "alter system set archive_command = '$tm archive-push %p'"
psql_ "select pg_reload_conf()" >/dev/null
sleep 1

backup() {
  /usr/bin/time -f "$1: %e s, peak RSS %M KiB" \
    runuser -u "$user" -- $tm --pg-host "$work/sock" --pg-port "$port" backup 2>&1 | tail -1
}
backup "full backup"
backup "second backup, every chunk known"
as_user "$scratch/list_memory" "$size_gib" 1024 "$scratch/repo" | head -1
backup "backup after a ${size_gib} GiB previous backup"
