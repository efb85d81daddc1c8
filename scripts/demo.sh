#!/usr/bin/env bash
# tidemark's main job on the embedded default, end to end on a throwaway cluster:
#   1. initdb a PostgreSQL cluster whose archive_command is `tidemark archive-push %p`
#      into a local repository (file:///…), created first by `tidemark init --offline`
#      from the data directory (only init creates a repository);
#   2. run a pgbench workload and switch WAL a few times;
#   3. wait until PostgreSQL reports every segment archived;
#   4. fetch each archived segment back with `tidemark archive-get` and compare bytes;
#   5. take a base backup with `tidemark backup`, then commit marked rows 1-3, note the
#      moment, commit rows 4-6, and archive them;
#   6. `tidemark plan` that moment, `tidemark restore --target-time` it into a new folder,
#      start a second server there, and check it holds exactly rows 1-3 (and everything
#      written before the backup);
#   7. print `tidemark info` (with the recoverable window).
# Everything lives in one temporary folder (kept with KEEP=1) and listens on a private
# socket only. As root, PostgreSQL runs as the unprivileged user `tidemark-test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cargo build --quiet -p tidemark-agent
target_dir=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d /tmp/tidemark-demo.XXXXXX)
chmod 755 "$work"
cp "$target_dir"/debug/tidemark "$work/tidemark"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id tidemark-test >/dev/null 2>&1 || useradd --create-home tidemark-test
  chown -R tidemark-test "$work"
  as_pg=(runuser -u tidemark-test --)
fi
port=$(( 20000 + RANDOM % 20000 ))
repo="file://$work/repo"
port2=$(( port + 1 ))
tm() { "${as_pg[@]}" "$work/tidemark" --repo "$repo" --pg-host "$work" --pg-port "$port" "$@"; }
sql_at() { "${as_pg[@]}" "$PG_BIN/psql" -h "$work" -p "$1" -X -A -t -q -v ON_ERROR_STOP=1 -d postgres -c "$2"; }
sql() { sql_at "$port" "$1"; }
stop() {
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/restored-data" -m fast stop >/dev/null 2>&1 || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap stop EXIT

echo "-- initdb and start a cluster archiving into $repo"
"${as_pg[@]}" "$PG_BIN/initdb" -D "$work/data" -A trust >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
wal_level = replica
archive_mode = on
archive_command = '$work/tidemark --repo $repo archive-push %p'
wal_keep_size = '1GB'
CONF
echo "-- tidemark init --offline: the repository and the stanza, from the data directory"
tm --pgdata "$work/data" init --offline
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w start >/dev/null

echo "-- workload: pgbench, then WAL switches"
pgbench=$(command -v pgbench || echo "$PG_BIN/pgbench")
"${as_pg[@]}" "$pgbench" -h "$work" -p "$port" -i -s 5 -q postgres >/dev/null 2>&1
"${as_pg[@]}" "$pgbench" -h "$work" -p "$port" -c 2 -t 500 postgres >/dev/null 2>&1
sql "CREATE TABLE t (x int)"
for _ in 1 2 3; do sql "INSERT INTO t SELECT generate_series(1, 10000)"; sql "SELECT pg_switch_wal()" >/dev/null; done
target=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn() - 1)")

echo "-- waiting for PostgreSQL to archive up to $target"
for _ in $(seq 1 120); do
  last=$(sql "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
  [ -n "$last" ] && [[ ! "$last" < "$target" ]] && break
  sleep 0.5
done
sql "SELECT 'archived ' || archived_count || ', failed ' || failed_count || ', last ' || last_archived_wal FROM pg_stat_archiver"

echo "-- every archived segment comes back byte-identical through archive-get"
n=0
for done_file in "$work"/data/pg_wal/archive_status/*.done; do
  name=$(basename "$done_file" .done)
  tm archive-get "$name" "$work/restored"
  cmp -s "$work/restored" "$work/data/pg_wal/$name" || { echo "MISMATCH: $name" >&2; exit 1; }
  n=$((n + 1))
done
echo "$n segments verified"
[ "$n" -gt 0 ]

echo "-- a base backup, then marked rows, a moment, more marked rows: only the archive holds them"
tm backup --label demo
sql "CREATE TABLE marks (n int PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
for n in 1 2 3; do sql "INSERT INTO marks (n) VALUES ($n)"; done
sleep 1
moment=$(sql "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
sleep 1
for n in 4 5 6; do sql "INSERT INTO marks (n) VALUES ($n)"; done
after=$(sql "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 120); do
  last=$(sql "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
  [ -n "$last" ] && [[ ! "$last" < "$after" ]] && break
  sleep 0.5
done
expected_t=$(sql "SELECT count(*) FROM t")
expected_marks=$(sql "SELECT string_agg(n::text, ',' ORDER BY n) FROM marks WHERE committed_at <= '$moment'")
echo "rows 1-3 committed before $moment, rows 4-6 after it"

echo "-- tidemark plan: is that moment reachable, and how? (nothing is written)"
tm plan --target-time "$moment"

echo "-- restore the database as it was at $moment into a new folder, start a second server"
tm restore --pgdata "$work/restored-data" --target-time "$moment" --target-action promote
cat >> "$work/restored-data/postgresql.conf" <<CONF
port = $port2
CONF
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/restored-data" -l "$work/restored.log" -w start >/dev/null
for _ in $(seq 1 240); do
  [ "$(sql_at "$port2" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
  sleep 0.5
done
got_marks=$(sql_at "$port2" "SELECT coalesce(string_agg(n::text, ',' ORDER BY n), '') FROM marks")
got_t=$(sql_at "$port2" "SELECT count(*) FROM t")
echo "original: marks $(sql "SELECT string_agg(n::text, ',' ORDER BY n) FROM marks"), $expected_t rows in t"
echo "restored: marks $got_marks, $got_t rows in t (expected marks $expected_marks)"
[ "$got_marks" = "$expected_marks" ] && [ "$got_marks" = "1,2,3" ] && [ "$got_t" = "$expected_t" ] ||
  { echo "MISMATCH after restore to $moment" >&2; exit 1; }

echo "-- tidemark info"
tm info
