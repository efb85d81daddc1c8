#!/bin/bash
# The agent's memory and CPU, measured: `tidemark agent` idle for IDLE seconds, then taking
# scheduled backups of the scale-50 pgbench database back to back (backup_schedule = "1s",
# ROUNDS backups). Prints, from /proc, sampled every 0.2 s:
#   - idle: the agent's RSS (median and max of the samples) and its CPU (user+system
#     seconds over the idle time, as a percentage of one core);
#   - during the backups: the agent's own RSS (max of the samples, and its VmHWM peak over
#     the whole run) and CPU, and, separately, each backup child's peak RSS (VmHWM, the
#     last sample before it exits) and the backups' seconds (median).
# The agent's figures are its own process only; a backup runs in a child of its own.
#
#   bench/agent-rss.sh [IDLE_SECONDS] [ROUNDS]        (defaults: 60, 3)
#   SCALE=2 WORK=/tmp/x bench/agent-rss.sh 5 1        (a smoke run on a small database)
#
# Run as root after `cargo build --release -p tidemark-agent` (TIDEMARK=path to use another
# binary). Everything runs as the user tidemark-bench. The database is made once, in
# $WORK/pg (default /tmp/tidemark-bench-agent, about 800 MB: initdb and pgbench -i -s 50),
# and kept for the next run; the repository and the agent's state are made fresh each run
# and removed at the end.
set -euo pipefail
idle=${1:-60}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
tidemark=${TIDEMARK:-${CARGO_TARGET_DIR:-$root/target}/release/tidemark}
work=${WORK:-/tmp/tidemark-bench-agent}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
scale=${SCALE:-50}
user=tidemark-bench
port=55991
[ -x "$tidemark" ] || { echo "agent-rss: $tidemark is missing: cargo build --release -p tidemark-agent" >&2; exit 2; }
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user"
as_user() { runuser -u "$user" -- "$@"; }

mkdir -p "$work"
chown "$user" "$work"
if [ ! -f "$work/pg/PG_VERSION" ]; then
  echo "agent-rss: making the scale-$scale database in $work/pg (once)" >&2
  as_user "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
fi
mkdir -p "$work/sock"; chown "$user" "$work/sock"
scratch="$work/run"
rm -rf "$scratch"; mkdir -p "$scratch/repo" "$scratch/state"
cp "$tidemark" "$scratch/tidemark"
chown -R "$user" "$scratch"
stop_pg() { as_user "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true; }
agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  stop_pg
  rm -rf "$scratch"
}
trap cleanup EXIT
start_pg() {
  as_user "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start \
    -o "-k $work/sock -p $port -c listen_addresses=127.0.0.1 -c autovacuum=off $1" >/dev/null
}
psql_() { as_user "$pgbin/psql" -h "$work/sock" -p "$port" -U postgres -qAt -c "$1" postgres; }
stop_pg
# The data is loaded with archiving off (its WAL is not the point), once.
start_pg "-c archive_mode=off"
if [ "$(psql_ "select count(*) from pg_class where relname = 'pgbench_accounts'")" = 0 ]; then
  as_user "$pgbin/pgbench" -h "$work/sock" -p "$port" -U postgres -i -s "$scale" -q postgres >/dev/null 2>&1
  psql_ "checkpoint"
fi
stop_pg
start_pg "-c archive_mode=on -c wal_level=replica"

config="$scratch/tidemark.toml"
cat >"$config" <<EOF
repo = "file://$scratch/repo"
state_path = "$scratch/state"
pg_host = "$work/sock"
pg_port = $port
pg_user = "postgres"
pgdata = "$work/pg"
EOF
chown "$user" "$config"
tm="$scratch/tidemark --config $config"
as_user $tm init --offline >/dev/null
psql_ "alter system set archive_command = '$tm archive-push %p'"
psql_ "select pg_reload_conf()" >/dev/null

# /proc readers: KiB of VmRSS / VmHWM, and user+system clock ticks.
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || true; }
hz=$(getconf CLK_TCK)
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
max() { sort -n | tail -1; }
mib() { awk '{ printf "%.1f", $1 / 1024 }'; }

log="$scratch/agent.log"
runuser -u "$user" -- $tm agent 2>"$log" &
agent_pid=$!
sleep 1
# runuser forks: the agent is its child.
agent=$(pgrep -P "$agent_pid" | head -1)
[ -n "$agent" ] || { echo "agent-rss: the agent did not start:" >&2; cat "$log" >&2; exit 1; }

echo "agent-rss: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $("$pgbin/postgres" --version)"
echo "agent-rss: database $(psql_ "select pg_size_pretty(pg_database_size('postgres'))"), binary $tidemark"

# Idle.
t0=$(ticks "$agent"); samples=(); anon=()
end=$((SECONDS + idle))
while [ $SECONDS -lt $end ]; do
  samples+=("$(kib "$agent" VmRSS)"); anon+=("$(kib "$agent" RssAnon)"); sleep 0.2
done
t1=$(ticks "$agent")
idle_anon=$(printf '%s\n' "${anon[@]}" | median | mib)
idle_median=$(printf '%s\n' "${samples[@]}" | median | mib)
idle_max=$(printf '%s\n' "${samples[@]}" | max | mib)
idle_cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.2f", 100 * d / hz / s }')
echo "idle ${idle} s: agent RSS median ${idle_median} MiB (${idle_anon} MiB anonymous, the rest mapped files: the binary), max ${idle_max} MiB; CPU ${idle_cpu}% of a core"

# Backups on the schedule, back to back.
echo 'backup_schedule = "1s"' >>"$config"
kill -HUP "$agent"
b0=$(ticks "$agent"); started=$SECONDS; samples=()
declare -A child_peak=()
while [ "$(grep -c 'backup: succeeded' "$log" || true)" -lt "$rounds" ]; do
  samples+=("$(kib "$agent" VmRSS)")
  for child in $(pgrep -P "$agent" || true); do
    peak=$(kib "$child" VmHWM)
    [ -n "$peak" ] && [ "$peak" -gt "${child_peak[$child]:-0}" ] && child_peak[$child]=$peak
  done
  if grep -q 'backup: failed' "$log"; then echo "agent-rss: a backup failed:" >&2; grep 'backup: ' "$log" | tail -5 >&2; exit 1; fi
  [ $((SECONDS - started)) -lt 1800 ] || { echo "agent-rss: $rounds backups took over 30 minutes" >&2; exit 1; }
  sleep 0.2
done
b1=$(ticks "$agent"); busy=$((SECONDS - started))
agent_hwm=$(kib "$agent" VmHWM | mib)
kill -TERM "$agent"; wait "$agent_pid" || true; agent_pid=
busy_max=$(printf '%s\n' "${samples[@]}" | max | mib)
seconds=$(grep 'backup: succeeded in' "$log" | sed 's/.*succeeded in \([0-9.]*\) s.*/\1/' | median)
children=$(for p in "${!child_peak[@]}"; do echo "${child_peak[$p]}"; done | sort -n | awk '{ printf "%s%.0f", (NR > 1 ? " " : ""), $1 / 1024 }')
busy_cpu=$(awk -v d=$((b1 - b0)) -v hz="$hz" -v s="$busy" 'BEGIN { printf "%.2f", 100 * d / hz / s }')
echo "during ${rounds} scheduled backups (${busy} s, each ${seconds} s median): agent RSS max ${busy_max} MiB (peak over the whole run, VmHWM: ${agent_hwm} MiB); CPU ${busy_cpu}% of a core"
echo "backup children, peak RSS each (MiB): ${children}"
