#!/usr/bin/env python3
"""Point-in-time restore benchmark: tidemark vs pgBackRest 2.45 (best configuration) vs the
`cp` floor, and the replay feed alone.

The workload, built once per run (PostgreSQL 15, 16 MiB segments): pgbench --scale 50 (by
default), a backup by both tools, then --seconds 60 of pgbench writes, with the target time
taken at half of them. Every segment is archived by both tools and copied into a plain
folder (`archive_command = 'tidemark archive-push %p && pgbackrest archive-push %p && cp %p
WAL/%f'`), so that all three restore the same WAL.

Three ways, alternating their order from round to round, each into a fresh data directory
and started with the same server options (archive_mode off, its own port and socket):
  * tidemark: `tidemark restore --target-time T --target-action promote` (its restore_command
    is the prefetching `archive-get`);
  * pgBackRest: `restore --type=time --target=T --target-action=promote --process-max=2`,
    with `archive-async=y` (its asynchronous, prefetching archive-get) and process-max 2;
  * the floor: `cp -a` of a data directory restored once from the same tidemark backup,
    with `restore_command = 'cp WAL/%f %p'` and the same recovery settings: PostgreSQL's
    own replay and nothing else.
Per way: files (the restore command, or `cp -a`), replay (server start until the log says
"recovery stopping before ..."), whole (files + server start until "database system is
ready to accept connections", after promotion). Before each timed step dirty pages are
flushed, and after a step's output is deleted the script waits --settle seconds (see
bench/backup.py, `Bench.settle`: this machine's ext4 slows file creation right after
deletions).

Then the replay feed alone: a shell loop calling each tool's restore_command once per
segment after the backup, in order, into a `pg_wal/RECOVERYXLOG` of an empty folder shaped
like a data directory, as PostgreSQL does; segments per second. Local: tidemark, pgBackRest
(archive-async=y, process-max=2) and `cp`; S3: tidemark against a local s3s-fs server (the
same WAL pushed there first; pgBackRest speaks S3 only over TLS, so it is not in that row).

Prints the medians with every round's figures, and the ratios the issue sets as targets
(replay and whole restore within 1.1x of the floor; feed >= 3x pgBackRest locally and >= 8
segments/s from S3). Run as root after `cargo build --release`; everything runs as the
unprivileged --user.

    python3 bench/restore-pitr.py                          # scale 50, 60 s, 3 rounds
    python3 bench/restore-pitr.py --scale 5 --seconds 10 --rounds 1 --settle 0   # smoke run
"""
import argparse, json, os, pwd, re, shutil, signal, socket, statistics, subprocess, sys, time

PGBIN = "/usr/lib/postgresql/15/bin"


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_recovery(conf, restore_command, target):
    """Rewrites tidemark's recovery block in `conf` (a postgresql.auto.conf): this
    restore_command, this target time, `recovery_target_action = 'promote'`."""
    lines = []
    for line in open(conf):
        if line.startswith("restore_command = "):
            line = f"restore_command = '{restore_command}'\n"
        elif line.startswith("recovery_target_time = "):
            continue  # set last: after the empty target kinds (see autoconf.rs)
        elif line.startswith("recovery_target_action = "):
            line = "recovery_target_action = 'promote'\n"
        lines.append(line)
    lines.append(f"recovery_target_time = '{target}'\n")
    with open(conf, "w") as f:
        f.writelines(lines)


class Bench:
    def __init__(self, args):
        self.args, self.w, self.user = args, args.workdir, args.user
        self.pw = pwd.getpwnam(self.user)
        self.data, self.sock, self.port = f"{self.w}/pg", f"{self.w}/sock", free_port()
        self.tm_repo, self.pgbr_repo = f"{self.w}/tm-repo", f"{self.w}/pgbr-repo"
        self.wal, self.floor_base = f"{self.w}/wal", f"{self.w}/floor-base"
        self.env = dict(os.environ, HOME=self.pw.pw_dir, USER=self.user, LOGNAME=self.user)
        for k in list(self.env):
            if k.startswith("PG") or k.startswith("TIDEMARK_"):
                del self.env[k]
        self.s3 = None

    def as_user(self, argv):
        return ["setpriv", f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}",
                "--init-groups"] + argv

    def sh(self, argv, check=True):
        r = subprocess.run(self.as_user(argv), capture_output=True, text=True, env=self.env,
                           cwd=self.w)
        if check and r.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout.strip()

    def psql(self, sql, port=None, sock=None):
        return self.sh([f"{PGBIN}/psql", "-h", sock or self.sock, "-p", str(port or self.port),
                        "-XAtqc", sql, "postgres"])

    def pgbr(self, *more):
        return [shutil.which("pgbackrest"), f"--config={self.w}/pgbackrest.conf",
                "--stanza=main", *more]

    def tidemark(self, *more, repo=None):
        return [self.args.tidemark, "--repo", repo or f"file://{self.tm_repo}", "--stanza",
                "main", *more]

    # -- the workload ---------------------------------------------------------------------

    def setup(self):
        """The cluster, both repositories, the backups, the writes and the target."""
        for d in (self.data, self.tm_repo, self.pgbr_repo, self.wal, self.floor_base,
                  f"{self.w}/pgbr", f"{self.w}/runs", f"{self.w}/s3"):
            shutil.rmtree(d, ignore_errors=True)
        for d in (self.tm_repo, self.pgbr_repo, self.wal, f"{self.w}/pgbr/lock",
                  f"{self.w}/pgbr/log", f"{self.w}/pgbr/spool", f"{self.w}/runs"):
            os.makedirs(d, exist_ok=True)
        subprocess.run(["chown", "-R", f"{self.user}:", self.w], check=True)
        with open(f"{self.w}/pgbackrest.conf", "w") as f:
            f.write(f"[global]\ncompress-type=lz4\nrepo1-path={self.pgbr_repo}\n"
                    f"archive-async=y\nprocess-max=2\nlock-path={self.w}/pgbr/lock\n"
                    f"log-path={self.w}/pgbr/log\nspool-path={self.w}/pgbr/spool\n"
                    f"log-level-console=warn\nlog-level-file=off\n"
                    f"\n[main]\npg1-path={self.data}\npg1-socket-path={self.sock}\n"
                    f"pg1-port={self.port}\n")
        self.sh([f"{PGBIN}/initdb", "-D", self.data, "-A", "trust", "--no-sync"])
        push = (" ".join(self.tidemark("archive-push", "%p")) + " && "
                + " ".join(self.pgbr("--archive-async=n", "archive-push", "%p"))
                + f" && cp %p {self.wal}/%f")
        with open(f"{self.data}/postgresql.conf", "a") as f:
            f.write(f"archive_mode = on\narchive_command = '{push}'\nfsync = off\n"
                    "max_wal_size = '4GB'\nautovacuum = off\n")
        self.sh(self.tidemark("--pgdata", self.data, "init", "--offline"))
        self.start_source()
        self.sh(self.pgbr("stanza-create"))
        print(f"  loading pgbench scale {self.args.scale}", file=sys.stderr)
        self.sh([f"{PGBIN}/pgbench", "-h", self.sock, "-p", str(self.port), "-i", "-q", "-s",
                 str(self.args.scale), "postgres"])
        self.psql("checkpoint")
        print("  backups", file=sys.stderr)
        conn = ["--pg-host", self.sock, "--pg-port", str(self.port)]
        backup = json.loads(self.sh(self.tidemark(*conn, "backup", "--json")))
        self.sh(self.pgbr("--type=full", "--start-fast", "backup"))
        print(f"  {self.args.seconds} s of pgbench writes", file=sys.stderr)
        bench = subprocess.Popen(self.as_user(
            [f"{PGBIN}/pgbench", "-h", self.sock, "-p", str(self.port), "-c", "4", "-j", "2",
             "-T", str(self.args.seconds), "postgres"]), env=self.env, cwd=self.w,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(self.args.seconds / 2)
        self.target = self.psql("select now()::text")
        with open(f"{self.w}/target", "w") as f:  # for bench/replay-ab.py
            f.write(self.target + "\n")
        bench.wait()
        last = self.psql("select pg_walfile_name(pg_switch_wal())")
        deadline = time.time() + 600
        while self.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") < last:
            if time.time() > deadline:
                raise BenchError(f"{last} not archived after 10 minutes")
            time.sleep(0.2)
        self.stop_source()
        # The floor's data directory: the same tidemark backup, restored once, its recovery
        # block replaced by the floor's (cp from the WAL folder, the same target).
        self.sh(self.tidemark("restore", "--pgdata", self.floor_base, "--backup",
                              backup["id"]))
        first = self.first_segment(backup)
        self.segments = sorted(n for n in os.listdir(self.wal) if len(n) == 24 and n >= first)
        print(f"  {len(self.segments)} segments from the backup on; target {self.target}",
              file=sys.stderr)

    def first_segment(self, backup):
        """The name of the segment the backup starts in (16 MiB segments: 256 per log)."""
        hi, lo = (int(x, 16) for x in backup["start_lsn"].split("/"))
        segno = ((hi << 32) | lo) // (16 << 20)
        return f"{backup['timeline']:08X}{segno // 256:08X}{segno % 256:08X}"

    def start_source(self):
        self.sh([f"{PGBIN}/pg_ctl", "-D", self.data, "-l", f"{self.w}/pg.log", "-w", "start",
                 "-o", f"-k {self.sock} -p {self.port} -c listen_addresses=''"])

    def stop_source(self):
        self.sh([f"{PGBIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False)

    # -- one restore ----------------------------------------------------------------------

    def files(self, way, dest):
        """The timed step that lays the files down (and the recovery settings)."""
        if way == "tidemark":
            argv = self.tidemark("restore", "--pgdata", dest, "--target-time", self.target,
                                 "--target-action", "promote")
        elif way == "pgbackrest":
            os.makedirs(dest, mode=0o700)
            shutil.chown(dest, self.user)
            shutil.rmtree(f"{self.w}/pgbr/spool/archive", ignore_errors=True)
            argv = self.pgbr(f"--pg1-path={dest}", "--type=time", f"--target={self.target}",
                             "--target-action=promote", "restore")
        else:
            argv = ["cp", "-a", self.floor_base, dest]
        os.sync()
        t0 = time.perf_counter()
        r = subprocess.run(self.as_user(argv), capture_output=True, text=True, env=self.env,
                           cwd=self.w)
        secs = time.perf_counter() - t0
        if r.returncode != 0:
            raise BenchError(f"{way} files: {r.stderr.strip()}")
        if way == "floor":
            self.floor_settings(dest)
        return secs

    def floor_settings(self, dest):
        """tidemark's recovery block with restore_command swapped for `cp`."""
        set_recovery(f"{dest}/postgresql.auto.conf", f"cp {self.wal}/%f %p", self.target)

    def replay(self, dest):
        """Starts the restored copy; returns (start to the target, start to accepting
        writes) from the moments its log shows them."""
        port, sock = free_port(), f"{dest}.sock"
        os.makedirs(sock, mode=0o700)
        shutil.chown(sock, self.user)
        log = f"{dest}.log"
        open(log, "w").close()
        shutil.chown(log, self.user)
        t0 = time.perf_counter()
        subprocess.run(self.as_user(
            [f"{PGBIN}/pg_ctl", "-D", dest, "-l", log, "start", "-o",
             f"-k {sock} -p {port} -c listen_addresses='' -c archive_mode=off"]),
            check=True, env=self.env, cwd=self.w, stdout=subprocess.DEVNULL)
        stopped = ready = None
        deadline = time.time() + 1200
        while ready is None:
            text = open(log).read()
            now = time.perf_counter() - t0
            if stopped is None and "recovery stopping before" in text:
                stopped = now
            if "database system is ready to accept connections" in text:
                ready = now
            if "FATAL" in text or "database system is shut down" in text or time.time() > deadline:
                raise BenchError(f"{dest} did not recover: {text[-2000:]}")
            time.sleep(0.005)
        self.sh([f"{PGBIN}/pg_ctl", "-D", dest, "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(sock, ignore_errors=True)
        os.remove(log)
        if stopped is None:
            raise BenchError(f"{dest}: recovery never reported reaching the target")
        return stopped, ready

    def round(self, rnd):
        ways = ["tidemark", "pgbackrest", "floor"]
        ways = ways[rnd % 3:] + ways[:rnd % 3]
        out = {}
        for way in ways:
            dest = f"{self.w}/runs/{way}"
            shutil.rmtree(dest, ignore_errors=True)
            files = self.files(way, dest)
            replay, ready = self.replay(dest)
            out[f"{way}_files"], out[f"{way}_replay"] = files, replay
            out[f"{way}_whole"] = files + ready
            shutil.rmtree(dest)
            self.settle()
        return out

    # -- the feed alone -------------------------------------------------------------------

    def feed(self, way):
        """segments/s of one restore_command call per segment, in order."""
        base = f"{self.w}/runs/feed-{way}"
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(f"{base}/pg_wal")
        subprocess.run(["chown", "-R", f"{self.user}:", base], check=True)
        dest = f"{base}/pg_wal/RECOVERYXLOG"
        if way == "tidemark":
            cmd = " ".join(self.tidemark("archive-get")) + f" $f {dest}"
        elif way == "tidemark-s3":
            cmd = " ".join(self.tidemark("archive-get", repo=self.s3_url)) + f" $f {dest}"
        elif way == "pgbackrest":
            # It reads the data directory's pg_control: the floor's copy serves.
            shutil.rmtree(f"{self.w}/pgbr/spool/archive", ignore_errors=True)
            cmd = " ".join(self.pgbr(f"--pg1-path={self.floor_base}", "archive-get")) + \
                f" $f {dest}"
        else:
            cmd = f"cp {self.wal}/$f {dest}"
        script = (f"cd {base} && for f in {' '.join(self.segments)}; do {cmd} || exit 1; "
                  f"rm {dest}; done")
        env = dict(self.env)
        if way == "tidemark-s3":
            env.update(self.s3_env)
        os.sync()
        t0 = time.perf_counter()
        r = subprocess.run(self.as_user(["sh", "-c", script]), capture_output=True, text=True,
                           env=env, cwd=base)
        secs = time.perf_counter() - t0
        if r.returncode != 0:
            raise BenchError(f"feed {way}: {r.stderr.strip()[-500:]}")
        # Let a prefetcher notice the end and exit before the folder goes.
        time.sleep(1)
        shutil.rmtree(base)
        return len(self.segments) / secs

    def start_s3(self):
        """A local s3s-fs server holding the same WAL in a tidemark repository."""
        exe = shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs")
        if not os.access(exe, os.X_OK):
            raise BenchError("s3s-fs not found (cargo install s3s-fs@0.14.1 --features binary --locked)")
        root = f"{self.w}/s3"
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(f"{root}/bench")
        port = free_port()
        self.s3 = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port),
                                    "--access-key", "bench", "--secret-key", "benchsecret", root],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        self.s3_url = "s3://bench/feed"
        self.s3_env = {"TIDEMARK_S3_ENDPOINT": f"http://127.0.0.1:{port}",
                       "TIDEMARK_S3_REGION": "us-east-1", "TIDEMARK_S3_PATH_STYLE": "true",
                       "TIDEMARK_S3_ACCESS_KEY_ID": "bench",
                       "TIDEMARK_S3_SECRET_ACCESS_KEY": "benchsecret"}
        env = dict(self.env, **self.s3_env)
        def run(argv):
            r = subprocess.run(self.as_user(argv), capture_output=True, text=True, env=env,
                               cwd=self.w)
            if r.returncode != 0:
                raise BenchError(f"{' '.join(argv)}: {r.stderr.strip()}")
        run(self.tidemark("--pgdata", self.floor_base, "init", "--offline", repo=self.s3_url))
        print(f"  pushing {len(self.segments)} segments to s3s-fs", file=sys.stderr)
        for name in self.segments:
            run(self.tidemark("archive-push", f"{self.wal}/{name}", repo=self.s3_url))

    def settle(self):
        subprocess.run(["sync"], check=True)
        time.sleep(self.args.settle)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/tidemark-bench-pitr")
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=60, help="pgbench writes after the backup")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--feed-rounds", type=int, default=3)
    ap.add_argument("--tidemark", default="/work/main/target/release/tidemark")
    ap.add_argument("--user", default="tidemark-bench")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 feed")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--settle", type=float, default=61,
                    help="seconds to wait after deleting a step's output (see bench/backup.py)")
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
    for d in ("", "/sock", "/bin"):
        os.makedirs(args.workdir + d, exist_ok=True)
    subprocess.run(["chown", "-R", f"{args.user}:", args.workdir], check=True)
    os.chmod(f"{args.workdir}/sock", 0o700)
    binary = f"{args.workdir}/bin/tidemark"
    shutil.copy2(args.tidemark, binary)
    args.tidemark = binary
    b = Bench(args)
    rounds, feeds = [], []
    try:
        b.setup()
        for rnd in range(args.rounds):
            print(f"  round {rnd + 1}/{args.rounds}", file=sys.stderr)
            rounds.append(b.round(rnd))
        if not args.no_s3:
            b.start_s3()
        ways = ["tidemark", "pgbackrest", "cp"] + ([] if args.no_s3 else ["tidemark-s3"])
        for rnd in range(args.feed_rounds):
            order = ways[rnd % len(ways):] + ways[:rnd % len(ways)]
            feeds.append({w: b.feed(w) for w in order})
    except BenchError as e:
        print(f"restore-pitr.py: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        b.stop_source()
        if b.s3:
            b.s3.send_signal(signal.SIGTERM)
            b.s3.wait()
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    feed = {k: statistics.median(r[k] for r in feeds) for k in feeds[0]}
    ratios = {
        "replay_vs_floor": med["tidemark_replay"] / med["floor_replay"],
        "whole_vs_floor": med["tidemark_whole"] / med["floor_whole"],
        "pgbackrest_whole_vs_tidemark": med["pgbackrest_whole"] / med["tidemark_whole"],
        "feed_vs_pgbackrest": feed["tidemark"] / feed["pgbackrest"],
    }
    report = {"segments": len(b.segments), "target": b.target, "rounds": rounds, "median": med,
              "feed_rounds": feeds, "feed_median": feed, "ratios": ratios}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"pgbench scale {args.scale}, {args.seconds} s of writes after the backup, "
          f"{len(b.segments)} segments from the backup on, target {b.target}; "
          f"{args.rounds} rounds, nproc {os.cpu_count()}")
    for k, v in med.items():
        print(f"  {k:22} {v:7.2f} s   (rounds: " + ", ".join(f"{r[k]:.2f}" for r in rounds) + ")")
    for k, v in feed.items():
        print(f"  feed {k:17} {v:7.1f} segments/s   (rounds: "
              + ", ".join(f"{r[k]:.1f}" for r in feeds) + ")")
    print(f"  tidemark replay / floor replay:   {ratios['replay_vs_floor']:.2f}x (target <= 1.1)")
    print(f"  tidemark whole / floor whole:     {ratios['whole_vs_floor']:.2f}x (target <= 1.1)")
    print(f"  pgBackRest whole / tidemark whole: {ratios['pgbackrest_whole_vs_tidemark']:.2f}x "
          f"(target >= 1.3)")
    print(f"  feed tidemark / pgBackRest:       {ratios['feed_vs_pgbackrest']:.2f}x (target >= 3)")
    if "tidemark-s3" in feed:
        print(f"  feed tidemark from S3:            {feed['tidemark-s3']:.1f} segments/s "
              f"(target >= 8)")


if __name__ == "__main__":
    main()
