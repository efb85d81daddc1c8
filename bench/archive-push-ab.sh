#!/bin/sh
# One timed unit for comparing two tidemark builds' archive-push: pushes the first N
# segments (default 40) of archive-push.py's pool, one process each as PostgreSQL's
# archiver does, into a fresh local repository. Time it as a whole process, alternating
# the two builds run by run (A B A B …), and compare medians, e.g.:
#
#   for i in $(seq 9); do
#     /usr/bin/time -f "new %e" bench/archive-push-ab.sh NEW_BIN new
#     /usr/bin/time -f "old %e" bench/archive-push-ab.sh OLD_BIN old
#   done
#
# MODE "new" runs `tidemark init --offline` first (builds since issue 12 refuse a location
# without a repository); "old" relies on the first push creating it, as builds before did.
# Pool and cluster: run archive-push.py once (--workdir, default /tmp/tidemark-bench).
set -e
BIN=$1; MODE=$2; N=${3:-40}; WORK=${WORK:-/tmp/tidemark-bench}
R=/tmp/tidemark-ab/repo-$MODE
rm -rf "$R"; mkdir -p "$R"
if [ "$MODE" = new ]; then
  "$BIN" --repo "file://$R" --pgdata "$WORK/pg" init --offline >/dev/null
fi
for s in $(ls "$WORK/pool" | grep -v json | head -"$N"); do
  "$BIN" --repo "file://$R" archive-push "$WORK/pool/$s"
done
