#!/bin/bash
# `tidemark verify --full` against `pgbackrest verify` on the same repository contents,
# and tidemark's incremental run. It prints figures and asserts nothing.
#
#   bench/verify.sh [--rounds N] [--scale S] [--seconds T] TIDEMARK_BINARY
#
# One PostgreSQL 15 cluster (pgbench --scale S, default 20) archives every segment to
# both tools (archive_command = 'tidemark archive-push %p && pgbackrest archive-push %p',
# both lz4), one full backup is taken by each, then pgbench writes for T seconds (default
# 60) and the last segment is archived: both repositories hold the same backup data and
# the same WAL. Then, N rounds (default 3), alternately: `tidemark verify --full`,
# `pgbackrest verify` (process-max 2: this machine has 2 cores), and `tidemark verify`
# (incremental: after a --full run it reads no blob, and only lists and re-reads the
# catalog). Before each run: sync, and the repositories read back into the page cache,
# so that each tool reads from memory as the other did. Medians and the ratio at the end.
#
# Runs as the user tidemark-test (BENCH_USER), started as root; work folder WORKDIR
# (default /tmp/tidemark-bench-verify), removed at the end unless KEEP=1.
set -euo pipefail

rounds=3
scale=20
seconds=60
while [[ ${1:-} == --* ]]; do
    case $1 in
    --rounds) rounds=$2 ;;
    --scale) scale=$2 ;;
    --seconds) seconds=$2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--rounds N] [--scale S] [--seconds T] TIDEMARK_BINARY" >&2
    exit 2
fi
tidemark=$(realpath "$1")
user=${BENCH_USER:-tidemark-test}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
w=${WORKDIR:-/tmp/tidemark-bench-verify}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

as_user() { setpriv --reuid="$user" --regid="$user" --init-groups env -u PGHOST -u PGPORT HOME=/tmp "$@"; }
cleanup() {
    as_user "$pgbin/pg_ctl" -D "$w/pg" -m immediate -w stop >/dev/null 2>&1 || true
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$w"
}
trap cleanup EXIT

rm -rf "$w"
mkdir -p "$w"/{tm,pgbr,sock,pgbr-spool}
chown -R "$user" "$w"
# tidemark's binary must be readable by the user: copy it into the work folder.
cp "$tidemark" "$w/tidemark"
chmod 755 "$w/tidemark"
cat >"$w/pgbackrest.conf" <<EOF
[global]
repo1-path=$w/pgbr
compress-type=lz4
process-max=2
lock-path=$w/pgbr-spool/lock
log-path=$w/pgbr-spool/log
spool-path=$w/pgbr-spool
log-level-console=warn
log-level-file=off

[main]
pg1-path=$w/pg
pg1-socket-path=$w/sock
pg1-port=$port
EOF
chown "$user" "$w/pgbackrest.conf"
tm=("$w/tidemark" --repo "file://$w/tm" --stanza main)
pgbr=(pgbackrest "--config=$w/pgbackrest.conf" --stanza=main)

as_user "$pgbin/initdb" -D "$w/pg" -A trust --no-sync >/dev/null
cat >>"$w/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$w/sock'
archive_mode = on
archive_command = '${tm[*]} archive-push %p && ${pgbr[*]} archive-push %p'
fsync = off
max_wal_size = '4GB'
EOF
as_user "${tm[@]}" --pgdata "$w/pg" init --offline >/dev/null
as_user "$pgbin/pg_ctl" -D "$w/pg" -l "$w/pg.log" -w start >/dev/null
as_user "${pgbr[@]}" stanza-create
psql() { as_user "$pgbin/psql" -h "$w/sock" -p "$port" -XAtqc "$1" postgres; }

echo "loading pgbench scale $scale" >&2
as_user "$pgbin/pgbench" -h "$w/sock" -p "$port" -i -q -s "$scale" postgres 2>/dev/null
psql checkpoint >/dev/null
as_user "${tm[@]}" backup --pg-host "$w/sock" --pg-port "$port" --pg-user "$user" >/dev/null
as_user "${pgbr[@]}" backup --type=full --start-fast
echo "pgbench for $seconds s" >&2
as_user "$pgbin/pgbench" -h "$w/sock" -p "$port" -c 2 -T "$seconds" postgres >/dev/null 2>&1
last=$(psql "select pg_walfile_name(pg_switch_wal())")
until [[ -e $w/pg/pg_wal/archive_status/$last.done ]]; do sleep 0.5; done

tm_info=$(as_user "${tm[@]}" info --json)
segments=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["wal"]["segments"])' <<<"$tm_info")
echo "repositories: tidemark $(du -sm "$w/tm" | cut -f1) MiB, pgBackRest $(du -sm "$w/pgbr" | cut -f1) MiB; $segments WAL segments; database $(psql "select pg_size_pretty(pg_database_size('postgres'))")"

warm() {
    sync
    find "$w/tm" "$w/pgbr" -type f -exec cat {} + >/dev/null 2>&1 || true
}
# Runs "$@" as the user; prints its wall seconds.
timed() {
    warm
    local t0 t1
    t0=$(date +%s.%N)
    as_user "$@" >"$w/last.out" 2>"$w/last.err" || {
        echo "failed: $* (see below)" >&2
        cat "$w/last.out" "$w/last.err" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}

declare -a t_full t_pgbr t_incr
for round in $(seq 1 "$rounds"); do
    t_full+=("$(timed "${tm[@]}" verify --full --json)")
    read_full=$(python3 -c 'import json; v=json.load(open("'"$w"'/last.out")); c=v["counts"]; print(c["blobs_read"], round(c["bytes_read"]/2**20), v["passed"])')
    t_pgbr+=("$(timed "${pgbr[@]}" verify --output=text)")
    t_incr+=("$(timed "${tm[@]}" verify --json)")
    read_incr=$(python3 -c 'import json; v=json.load(open("'"$w"'/last.out")); c=v["counts"]; print(c["blobs_read"], c["blobs_proven_before"], v["passed"])')
    echo "round $round: tidemark --full ${t_full[-1]} s (blobs read, MiB, passed: $read_full) | pgbackrest verify ${t_pgbr[-1]} s | tidemark incremental ${t_incr[-1]} s (read, proven before, passed: $read_incr)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mf=$(median "${t_full[@]}")
mp=$(median "${t_pgbr[@]}")
mi=$(median "${t_incr[@]}")
echo "medians: tidemark verify --full $mf s, pgbackrest verify $mp s, tidemark verify (incremental) $mi s"
echo "ratio pgbackrest/tidemark --full: $(echo "scale=2; $mp / $mf" | bc)x; pgbackrest/tidemark incremental: $(echo "scale=2; $mp / $mi" | bc)x"
