#!/usr/bin/env python3
"""Backup and restore benchmark: tidemark vs pg_basebackup -Fp vs pgBackRest 2.45.

What it measures, on one PostgreSQL 15 database (pgbench, --scale 50 by default, ~750 MiB),
page cache warm, in one run:
  * backup wall time: `tidemark backup` (local repository, lz4), `pg_basebackup -Fp`
    (plain copy, no compression, no manifest checksums, WAL not included) and pgBackRest
    `backup --type=full` (lz4, posix repository) with process-max 1 and 2;
  * restore wall time into an empty folder: `tidemark restore` and pgBackRest `restore`
    with process-max 1 and 2;
  * peak RSS of tidemark backup and restore (GNU time, the tool's own figure);
  * deduplication: after updating 1% of pgbench_accounts' rows, the bytes a second tidemark
    backup adds, as a share of what the first one added (autovacuum off, table vacuumed
    first, so that the update is the only change). Two kinds of 1%: a contiguous
    range of accounts (aid <= 1%), and 1% scattered over the whole table (every 100th
    account: that touches most pages, so no page-aligned deduplication can help much).

How: the cluster archives every WAL segment to both tools (`tidemark archive-push %p &&
pgbackrest archive-push %p`), both of which wait for the backup's WAL as they must. Each
round uses fresh repositories (archive_command is switched with ALTER SYSTEM), and the
order of the tools alternates between rounds. Figures are medians across rounds, with
tidemark's ratios to the references. Backups are fsynced by every tool (pg_basebackup's
default too). Run as root; everything runs as the unprivileged --user.
"""
import argparse, json, os, pwd, shutil, socket, statistics, subprocess, sys, time

PGBIN = "/usr/lib/postgresql/15/bin"


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self, args):
        self.args, self.w, self.user = args, args.workdir, args.user
        self.pw = pwd.getpwnam(self.user)
        self.data, self.sock, self.port = f"{self.w}/pg", f"{self.w}/sock", free_port()
        self.env = dict(os.environ, HOME=self.pw.pw_dir, USER=self.user, LOGNAME=self.user)
        self.warm_paths = []
        for k in list(self.env):
            if k.startswith("PG") or k.startswith("TIDEMARK_"):
                del self.env[k]

    def as_user(self, argv):
        return ["setpriv", f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}",
                "--init-groups"] + argv

    def sh(self, argv, check=True):
        r = subprocess.run(self.as_user(argv), capture_output=True, text=True, env=self.env,
                           cwd=self.w)
        if check and r.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout.strip()

    def timed(self, argv):
        """Runs argv as the user under GNU time; returns (seconds, peak RSS MiB). Dirty
        pages of earlier steps are flushed first (untimed), so that no tool pays for the
        write-back of the one before it, and the inputs are read back into the page cache
        (see `warm`)."""
        self.warm()
        os.sync()
        t0 = time.perf_counter()
        r = subprocess.run(self.as_user(["/usr/bin/time", "-f", "%M"] + argv),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=self.env, cwd=self.w)
        secs = time.perf_counter() - t0
        lines = r.stderr.strip().splitlines()
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited {r.returncode}: "
                             + " | ".join(l for l in lines[:-1] if not l.startswith("Command ")))
        return secs, int(lines[-1]) / 1024

    def psql(self, sql):
        return self.sh([f"{PGBIN}/psql", "-h", self.sock, "-p", str(self.port), "-XAtqc", sql,
                        "postgres"])

    def pgbr(self, repo, *more):
        return [shutil.which("pgbackrest"), f"--config={self.w}/pgbackrest.conf",
                f"--repo1-path={repo}", "--stanza=main", *more]

    def tidemark(self, repo, *more):
        return [self.args.tidemark, "--repo", f"file://{repo}", "--stanza", "main", *more]

    def start(self):
        self.stop()  # a server left running by an interrupted run
        fresh = not os.path.exists(f"{self.data}/PG_VERSION")
        if fresh:
            self.sh([f"{PGBIN}/initdb", "-D", self.data, "-A", "trust", "--no-sync"])
            with open(f"{self.data}/postgresql.conf", "a") as f:
                f.write("archive_mode = on\narchive_command = '/bin/true'\nfsync = off\n"
                        "max_wal_senders = 4\nmax_wal_size = '4GB'\nautovacuum = off\n")
        with open(f"{self.w}/pgbackrest.conf", "w") as f:
            f.write(f"[global]\ncompress-type=lz4\narchive-async=n\nlock-path={self.w}/pgbr/lock\n"
                    f"log-path={self.w}/pgbr/log\nspool-path={self.w}/pgbr\nlog-level-console=warn\n"
                    f"\n[main]\npg1-path={self.data}\npg1-socket-path={self.sock}\n"
                    f"pg1-port={self.port}\n")
        self.sh([f"{PGBIN}/pg_ctl", "-D", self.data, "-l", f"{self.w}/pg.log", "-w", "start",
                 "-o", f"-k {self.sock} -p {self.port} -c listen_addresses=127.0.0.1 "
                 "-c autovacuum=off"])
        if fresh or self.psql("select to_regclass('pgbench_accounts') is null") == "t":
            print(f"  loading pgbench scale {self.args.scale}", file=sys.stderr)
            self.sh([f"{PGBIN}/pgbench", "-h", self.sock, "-p", str(self.port), "-i", "-q",
                     "-s", str(self.args.scale), "postgres"])
            self.psql("checkpoint")

    def stop(self):
        self.sh([f"{PGBIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False)

    def archive_to(self, tm_repo, pgbr_repo=None):
        """Points archive_command at this round's repositories (both tools, or tidemark's)."""
        cmd = " ".join(self.tidemark(tm_repo, "archive-push", "%p"))
        if pgbr_repo:
            cmd += " && " + " ".join(self.pgbr(pgbr_repo, "archive-push", "%p"))
        self.psql(f"alter system set archive_command = '{cmd}'")
        self.psql("select pg_reload_conf()")
        time.sleep(0.5)

    def round(self, rnd):
        base = f"{self.w}/runs/round{rnd}"
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        shutil.chown(base, self.user)
        tm_repo, pgbr_repo = f"{base}/tm-repo", f"{base}/pgbr-repo"
        for d in (tm_repo, pgbr_repo):
            os.makedirs(d)
            shutil.chown(d, self.user)
        # Only init creates a repository: before archive_command points at it.
        self.sh(self.tidemark(tm_repo, "--pgdata", self.data, "init", "--offline"))
        self.archive_to(tm_repo, pgbr_repo)
        self.sh(self.pgbr(pgbr_repo, "stanza-create"))
        self.warm_paths = [self.data, tm_repo, pgbr_repo, self.args.tidemark,
                           shutil.which("pgbackrest"), f"{PGBIN}/pg_basebackup"]
        conn = ["--pg-host", self.sock, "--pg-port", str(self.port)]
        out = {}
        backups = [
            ("tidemark", lambda: self.timed(self.tidemark(tm_repo, *conn, "backup"))),
            ("pg_basebackup", lambda: self.timed([
                f"{PGBIN}/pg_basebackup", "-h", self.sock, "-p", str(self.port), "-D",
                f"{base}/basebackup", "-Fp", "-X", "none", "-c", "fast",
                "--manifest-checksums=NONE"])),
            ("pgbackrest_p1", lambda: self.timed(self.pgbr(
                pgbr_repo, "--type=full", "--process-max=1", "--start-fast", "backup"))),
            ("pgbackrest_p2", lambda: self.timed(self.pgbr(
                pgbr_repo, "--type=full", "--process-max=2", "--start-fast", "backup"))),
        ]
        if rnd % 2:
            backups.reverse()
        for name, run in backups:
            out[f"backup_{name}"], rss = run()
            if name == "tidemark":
                out["backup_tidemark_rss_mib"] = rss
            if name == "pg_basebackup":
                shutil.rmtree(f"{base}/basebackup")
                self.settle()
        out["repo_tidemark_mib"] = du(tm_repo) / 2**20
        restores = [
            ("tidemark", lambda d: self.timed(self.tidemark(tm_repo, "restore", "--pgdata", d))),
            ("pgbackrest_p1", lambda d: self.timed(self.pgbr(
                pgbr_repo, f"--pg1-path={d}", "--process-max=1", "restore"))),
            ("pgbackrest_p2", lambda d: self.timed(self.pgbr(
                pgbr_repo, f"--pg1-path={d}", "--process-max=2", "restore"))),
        ]
        if rnd % 2:
            restores.reverse()
        if self.args.no_restore:
            restores = []
        for name, run in restores:
            target = f"{base}/restore-{name}"
            os.makedirs(target, mode=0o700)  # pgBackRest wants it to exist; tidemark takes either
            shutil.chown(target, self.user)
            out[f"restore_{name}"], rss = run(target)
            if name == "tidemark":
                out["restore_tidemark_rss_mib"] = rss
            shutil.rmtree(target)
            self.settle()
        self.archive_to(tm_repo)
        shutil.rmtree(pgbr_repo)
        return out, tm_repo, base

    def warm(self):
        """Reads every input of the timed steps (the database, this round's repositories,
        the tools' programs) so that each step starts with its input in the page cache, as
        the issue's figures were taken. This VM runs DAMON reclaim (a `kdamond` thread,
        scheme `pageout` for memory idle for 12 aggregation intervals of 5 s): anything
        untouched for a minute, which the 61 s `settle` guarantees, is dropped from the
        page cache, and the next step reads it back from disk in small pieces (seen: a
        restore issuing 830 reads of 4 KiB to 12 KiB from its repository)."""
        for path in self.warm_paths:
            files = [path] if os.path.isfile(path) else (
                os.path.join(root, f) for root, _, fs in os.walk(path) for f in fs)
            for f in files:
                try:
                    with open(f, "rb", buffering=0) as fh:
                        while fh.read(1 << 20):
                            pass
                except OSError:
                    pass  # a file removed meanwhile (the server's temporary files)

    def settle(self):
        """Deletes are followed by a pause before the next timed step, for two effects of
        this machine that would otherwise land on whichever tool runs next:
        - on ext4 without a journal, creating a file scans past every inode freed in the
          last 60 s (`recently_deleted` in fs/ext4/ialloc.c; journaled ext4 skips this),
          so a step right after a deletion of a thousand files pays for it;
        - keeping every restored copy instead (no deletes) makes each buffered writer's
          next 800 MiB land in memory the VM has not touched yet, which is much slower
          (pgBackRest's restores: 1.7 s, then 3.4 and 3.2 s; tidemark's direct writes do
          not use the page cache and stay at 1.0-1.2 s).
        Deleting and then waiting avoids both: freed memory is reused, and the freed
        inodes age out."""
        subprocess.run(["sync"], check=True)
        time.sleep(self.args.settle)

    def dedup(self, base):
        """Backups into a fresh repository: a first one, then one after updating 1% of
        pgbench_accounts' rows in one range, then one after updating 1% scattered."""
        repo = f"{base}/dedup-repo"
        os.makedirs(repo)
        shutil.chown(repo, self.user)
        self.archive_to(repo)
        conn = ["--pg-host", self.sock, "--pg-port", str(self.port)]
        rows = int(self.psql("select count(*) from pgbench_accounts"))

        def added():
            self.psql("checkpoint")
            r = subprocess.run(self.as_user(self.tidemark(repo, *conn, "backup", "--json")),
                               capture_output=True, text=True, env=self.env, cwd=self.w)
            if r.returncode != 0:
                raise BenchError(f"tidemark backup: {r.stderr.strip()}")
            return json.loads(r.stdout)["stored_added"] / 2**20

        # A settled table: earlier runs' dead rows pruned, so that the only change between
        # the backups is the update (autovacuum is off in this cluster).
        self.psql("vacuum pgbench_accounts")
        out = {"first_added_mib": added()}
        self.psql(f"update pgbench_accounts set abalance = abalance + 1 where aid <= {rows // 100}")
        out["contiguous_1pct_added_mib"] = added()
        self.psql("update pgbench_accounts set abalance = abalance + 1 where aid % 100 = 0")
        out["scattered_1pct_added_mib"] = added()
        for k in ("contiguous", "scattered"):
            out[f"{k}_share"] = out[f"{k}_1pct_added_mib"] / out["first_added_mib"]
        return out


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, f)).st_blocks * 512 for f in files)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/tidemark-bench-backup")
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tidemark", default="/work/main/target/release/tidemark")
    ap.add_argument("--user", default="tidemark-bench")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-restore", action="store_true", help="measure backups only")
    ap.add_argument("--settle", type=float, default=61,
                    help="seconds to wait after deleting a step's output, before the next "
                         "timed step (see Bench.settle)")
    args = ap.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    if not os.access(args.tidemark, os.X_OK):
        ap.error(f"no tidemark binary at {args.tidemark}")
    if not shutil.which("pgbackrest"):
        subprocess.run(["apt-get", "install", "-y", "pgbackrest"], check=True,
                       capture_output=True)
    try:
        pwd.getpwnam(args.user)
    except KeyError:
        subprocess.run(["useradd", "-m", args.user], check=True)
    for d in ("", "/sock", "/pgbr", "/pgbr/lock", "/pgbr/log", "/runs", "/bin"):
        os.makedirs(args.workdir + d, exist_ok=True)
    subprocess.run(["chown", "-R", f"{args.user}:", args.workdir], check=True)
    os.chmod(f"{args.workdir}/sock", 0o700)
    # The user must be able to run the binary: copy it next to the data.
    binary = f"{args.workdir}/bin/tidemark"
    shutil.copy2(args.tidemark, binary)
    args.tidemark = binary
    b = Bench(args)
    rounds, dedup = [], None
    try:
        b.start()
        size = int(b.psql("select sum(pg_database_size(oid)) from pg_database"))
        b.sh(["tar", "-cf", "/dev/null", b.data])  # warm the page cache
        for rnd in range(args.rounds):
            b.settle()  # after the last round's (or an earlier run's) deletes
            print(f"  round {rnd + 1}/{args.rounds}", file=sys.stderr)
            out, _, base = b.round(rnd)
            rounds.append(out)
            if rnd == args.rounds - 1:
                dedup = b.dedup(base)
            shutil.rmtree(base)
    except BenchError as e:
        print(f"backup.py: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        b.stop()
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ratios = {
        "backup_vs_pgbackrest_p2": med["backup_pgbackrest_p2"] / med["backup_tidemark"],
        "backup_vs_pg_basebackup": med["backup_tidemark"] / med["backup_pg_basebackup"],
    }
    if not args.no_restore:
        ratios["restore_vs_pgbackrest_best"] = min(
            med["restore_pgbackrest_p1"], med["restore_pgbackrest_p2"]) / med["restore_tidemark"]
    report = {"database_mib": size / 2**20, "rounds": rounds, "median": med, "ratios": ratios,
              "dedup": dedup}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"database: {size / 2**20:.0f} MiB (pgbench scale {args.scale}), {args.rounds} rounds, "
          f"nproc {os.cpu_count()}")
    for k, v in med.items():
        unit = "MiB" if k.endswith("mib") else "s"
        print(f"  {k:32} {v:8.2f} {unit}   (rounds: "
              + ", ".join(f"{r[k]:.2f}" for r in rounds) + ")")
    print(f"  pgBackRest p2 backup / tidemark backup: {ratios['backup_vs_pgbackrest_p2']:.2f}x "
          f"(target > 1)")
    print(f"  tidemark backup / pg_basebackup -Fp:    {ratios['backup_vs_pg_basebackup']:.2f}x "
          f"(target <= 1.5)")
    if "restore_vs_pgbackrest_best" in ratios:
        print(f"  best pgBackRest restore / tidemark:     "
              f"{ratios['restore_vs_pgbackrest_best']:.2f}x (target >= 2)")
    if dedup:
        print(f"  dedup: first backup added {dedup['first_added_mib']:.1f} MiB; after 1% of rows "
              f"updated: contiguous {dedup['contiguous_1pct_added_mib']:.1f} MiB "
              f"({dedup['contiguous_share']:.1%}, target <= 10%), scattered "
              f"{dedup['scattered_1pct_added_mib']:.1f} MiB ({dedup['scattered_share']:.1%})")


if __name__ == "__main__":
    main()
