#!/usr/bin/env python3
"""Archive-push benchmark: tidemark vs pgBackRest 2.45 vs a cp+fsync baseline.

What it measures: the cost of archiving one 16 MiB WAL segment the way PostgreSQL's
archiver does it -- one process per segment, synchronously, exit 0 once durable.

How:
  * Prepare (cached in --workdir): a PostgreSQL 15 cluster run by an unprivileged user,
    with archive_command copying completed segments into a pool while pgbench runs.
    Segments written by `pgbench -i` (bulk load) are dropped, so the pool holds full
    segments of ordinary pgbench WAL, checkpoints every 30 s (pgBackRest quotes ~6.6x
    for lz4 on such WAL; this pool gives ~5.9x). The cluster is stopped once it is ready.
  * Per round: fresh empty repositories for every tool (pgBackRest's via
    `stanza-create --no-online`, lz4, posix repo, archive-async=n), then for each
    segment run every tool once, cycling through all orderings so that no tool is
    systematically first (cold data) or last.
  * Per call: wall time (perf_counter around the subprocess) and peak RSS. Each call is
    `setpriv ... /usr/bin/time -f %M TOOL`: setpriv execs in place, and GNU time forks
    the tool from its own small process. Measuring with os.wait4 from here would not
    work: a process forked from Python inherits Python's high-water RSS (~14 MiB, kept
    across exec), which would hide a small tool's real figure. Both wrappers cost every
    tool the same few ms. The cp baseline (`dd conv=fsync`) does not fsync the folder.
  * Report per tool: segments/s, p50/p95 ms, max peak RSS, repository size; medians
    across rounds, and tidemark/pgBackRest ratios.
"""
import argparse, itertools, json, os, platform, pwd, shutil, socket, statistics
import subprocess, sys, time

PGBIN = "/usr/lib/postgresql/15/bin"
SEG_SIZE = 16 * 1024 * 1024
TOOLS = ("tidemark", "pgbackrest", "cp")


class BenchError(Exception):
    pass


def sh(argv, user=None, **kw):
    """Run a setup command (untimed), as `user` if given; fail with its stderr."""
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def du(path):
    """Bytes on disk under path (like du -s)."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, f)).st_blocks * 512 for f in files)
    return total


def pool_segments(pool, start):
    """Full-size WAL segments in the pool named after `start` (the switched-out segment)."""
    return sorted(f for f in os.listdir(pool) if len(f) == 24 and f > start
                  and os.path.getsize(os.path.join(pool, f)) == SEG_SIZE)


def timed_call(prefix, argv, what, **kw):
    """Runs `prefix + argv` (prefix ends with GNU `time -f %M`); returns (seconds, peak
    RSS in KiB) or fails with the tool's stderr."""
    t0 = time.perf_counter()
    r = subprocess.run(prefix + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, **kw)
    elapsed = time.perf_counter() - t0
    lines = r.stderr.strip().splitlines()
    if r.returncode != 0:  # drop GNU time's own lines: its status note and %M
        err = [l for l in lines[:-1] if not l.startswith("Command ")]
        raise BenchError(f"{what} exited {r.returncode}, stderr: " + " | ".join(err))
    return elapsed, int(lines[-1])


def p95(sorted_values):
    """The 95th percentile of an ascending list (nearest rank)."""
    return sorted_values[min(len(sorted_values) - 1, int(round(0.95 * len(sorted_values))) - 1)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """The PostgreSQL 15 cluster that produces the pool (data dir cached in the work dir)."""

    def __init__(self, work, user):
        self.work, self.user = work, user
        self.data, self.sock = f"{work}/pg", f"{work}/sock"
        self.pool, self.port = f"{work}/pool", free_port()

    def psql(self, sql, db="postgres"):
        return sh([f"{PGBIN}/psql", "-h", self.sock, "-p", str(self.port), "-d", db,
                   "-XAtqc", sql], self.user)

    def start(self):
        if not os.path.exists(f"{self.data}/PG_VERSION"):
            sh([f"{PGBIN}/initdb", "-D", self.data, "-A", "trust"], self.user)
            with open(f"{self.data}/postgresql.conf", "a") as f:
                # fsync off only speeds up WAL production; the WAL content is the same.
                # Frequent checkpoints give the usual mix of full-page images and records
                # (without them pgbench WAL is ~400 bytes/transaction and compresses ~2x).
                f.write(f"archive_mode = on\narchive_command = 'test ! -f {self.pool}/%f "
                        f"&& cp %p {self.pool}/%f'\nfsync = off\nsynchronous_commit = off\n"
                        "checkpoint_timeout = 30s\n")
        sh([f"{PGBIN}/pg_ctl", "-D", self.data, "-l", f"{self.work}/pg.log", "-w", "start",
            "-o", f"-k {self.sock} -p {self.port} -c listen_addresses=127.0.0.1"], self.user)

    def stop(self):
        subprocess.run(["runuser", "-u", self.user, "--", f"{PGBIN}/pg_ctl", "-D", self.data,
                        "-m", "fast", "-w", "stop"], capture_output=True)

    def fill_pool(self, n):
        """Run pgbench until the pool holds n full segments of non-bulk-load WAL."""
        meta_path = f"{self.work}/pool.json"
        if not os.path.exists(meta_path):
            sh([f"{PGBIN}/pgbench", "-h", self.sock, "-p", str(self.port), "-i", "-q",
                "-s", "20", "postgres"], self.user)
            # Everything up to and including the segment switched out here is bulk load.
            start = self.psql("select pg_walfile_name(pg_switch_wal())")
            json.dump({"start": start}, open(meta_path, "w"))
        start = json.load(open(meta_path))["start"]
        for f in os.listdir(self.pool):
            if f <= start:
                os.unlink(os.path.join(self.pool, f))
        while len(pool_segments(self.pool, start)) < n:
            print(f"  pool: {len(pool_segments(self.pool, start))}/{n} segments, running pgbench",
                  file=sys.stderr)
            sh([f"{PGBIN}/pgbench", "-h", self.sock, "-p", str(self.port), "-n", "-c", "4",
                "-j", "2", "-T", "20", "postgres"], self.user)
            time.sleep(1)  # let the archiver catch up
        return start


def prepare(args, user):
    """Create the user, work dir, pool and pgBackRest config; return (segments, facts)."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        sh(["useradd", "-m", user])
    w = args.workdir
    for d in ("", "/pool", "/sock", "/pgbr", "/pgbr/lock", "/pgbr/log", "/pgbr/conf.d", "/runs"):
        os.makedirs(w + d, exist_ok=True)
    sh(["chown", "-R", f"{user}:", w])
    os.chmod(f"{w}/sock", 0o700)
    meta = json.load(open(f"{w}/pool.json")) if os.path.exists(f"{w}/pool.json") else {}
    if "start" not in meta or len(pool_segments(f"{w}/pool", meta["start"])) < args.segments:
        cluster = Cluster(w, user)
        try:
            cluster.start()
            meta["start"] = cluster.fill_pool(args.segments)
        finally:
            cluster.stop()
    segs = [f"{w}/pool/{s}" for s in pool_segments(f"{w}/pool", meta["start"])][:args.segments]
    with open(f"{w}/pgbackrest.conf", "w") as f:
        f.write(f"[global]\ncompress-type=lz4\narchive-async=n\nlock-path={w}/pgbr/lock\n"
                f"log-path={w}/pgbr/log\nspool-path={w}/pgbr\n\n[main]\npg1-path={w}/pg\n")
    # The lz4 ratio of the pool (level 1, as pgBackRest uses), computed once per pool size.
    ratio_path, key = f"{w}/lz4-ratio.json", f"{os.path.basename(segs[0])}+{len(segs)}"
    cache = json.load(open(ratio_path)) if os.path.exists(ratio_path) else {}
    if key not in cache and shutil.which("lz4"):
        packed = sum(len(subprocess.run(["lz4", "-1", "-c", s], capture_output=True,
                                        check=True).stdout) for s in segs)
        cache[key] = round(len(segs) * SEG_SIZE / packed, 2)
        json.dump(cache, open(ratio_path, "w"))
    return segs, cache.get(key)


def machine_facts(args, tools):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    facts = {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
             "postgresql": sh([f"{PGBIN}/postgres", "--version"])}
    if "pgbackrest" in tools:
        facts["pgbackrest"] = sh(["pgbackrest", "version"])
    if "tidemark" in tools:
        r = subprocess.run([args.tidemark, "--version"], capture_output=True, text=True)
        facts["tidemark"] = (r.stdout.strip() or "unknown") + f" ({args.tidemark})"
    return facts


def run_round(args, user, segs, tools, rnd):
    """One round: fresh repositories, every segment through every tool; per-tool figures."""
    pw = pwd.getpwnam(user)
    base = f"{args.workdir}/runs/round{rnd}"
    shutil.rmtree(base, ignore_errors=True)
    repos = {t: f"{base}/{t}" for t in tools}
    for r in repos.values():
        os.makedirs(r)
    sh(["chown", "-R", f"{user}:", base])
    conf = f"--config={args.workdir}/pgbackrest.conf"
    # Absolute paths: setpriv would otherwise walk root's PATH (shims and all) on every call.
    pgbr = [shutil.which("pgbackrest") or "pgbackrest", conf,
            f"--config-include-path={args.workdir}/pgbr/conf.d",
            f"--repo1-path={repos.get('pgbackrest')}", "--stanza=main"]
    if "pgbackrest" in tools:
        sh(pgbr + ["--no-online", "stanza-create"], user)
    if "tidemark" in tools:
        # Only init creates a repository; --offline reads the cluster from pg_control, as
        # pgBackRest's --no-online does.
        sh([args.tidemark, "--repo", f"file://{repos['tidemark']}", "--stanza", "main",
            "--pgdata", f"{args.workdir}/pg", "init", "--offline"], user)
    commands = {
        "tidemark": lambda s: [args.tidemark, "--repo", f"file://{repos['tidemark']}",
                               "--stanza", "main", "archive-push", s],
        "pgbackrest": lambda s: pgbr + ["archive-push", s],
        "cp": lambda s: [shutil.which("dd"), f"if={s}", f"of={repos['cp']}/{os.path.basename(s)}",
                         "bs=1M", "conv=fsync", "status=none"],
    }
    prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
              "/usr/bin/time", "-f", "%M"]
    env = dict(os.environ, HOME=pw.pw_dir, USER=user, LOGNAME=user)
    times = {t: [] for t in tools}
    rss = {t: 0 for t in tools}
    orders = list(itertools.permutations(tools))
    for i, seg in enumerate(segs):
        for t in orders[(i + rnd) % len(orders)]:
            elapsed, kib = timed_call(prefix, commands[t](seg),
                                      f"{t} archive-push of {os.path.basename(seg)}",
                                      cwd=base, env=env)
            times[t].append(elapsed)
            rss[t] = max(rss[t], kib)
    out = {}
    for t in tools:
        ms = sorted(x * 1000 for x in times[t])
        out[t] = {"segments_per_s": len(segs) / sum(times[t]),
                  "p50_ms": statistics.median(ms),
                  "p95_ms": p95(ms), "max_rss_mib": rss[t] / 1024,
                  "repo_mib": du(repos[t]) / 2**20}
    shutil.rmtree(base)
    return out


def segment_bench_args(doc, segments, choices):
    """The options both archive benchmarks take (this one and archive-async.py)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/tidemark-bench")
    ap.add_argument("--segments", type=int, default=segments)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tidemark", default="/work/main/target/release/tidemark")
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(choices))
    ap.add_argument("--user", default="tidemark-bench", help="unprivileged user to run as")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return ap


def main():
    ap = segment_bench_args(__doc__, 200, TOOLS)
    args = ap.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    tools = tuple(t for t in TOOLS if not args.only or t in args.only.split(","))
    if not tools or args.segments < 1 or args.rounds < 1:
        ap.error("nothing to measure")
    if "tidemark" in tools and not os.access(args.tidemark, os.X_OK):
        ap.error(f"no tidemark binary at {args.tidemark} (use --tidemark or --only pgbackrest,cp)")
    if not os.access("/usr/bin/time", os.X_OK):
        ap.error("needs GNU time at /usr/bin/time (apt-get install time)")
    if "pgbackrest" in tools and not shutil.which("pgbackrest"):
        sh(["apt-get", "install", "-y", "pgbackrest"])
    try:
        segs, lz4_ratio = prepare(args, args.user)
        facts = machine_facts(args, tools)
        rounds = []
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}: {len(segs)} segments x {len(tools)} tools",
                  file=sys.stderr)
            rounds.append(run_round(args, args.user, segs, tools, rnd))
    except BenchError as e:
        sys.exit(f"archive-push bench: {e}")
    keys = rounds[0][tools[0]].keys()
    median = {t: {k: statistics.median(r[t][k] for r in rounds) for k in keys} for t in tools}
    ratios = {}
    if "tidemark" in tools and "pgbackrest" in tools:
        tm, pb = median["tidemark"], median["pgbackrest"]
        ratios = {"throughput": tm["segments_per_s"] / pb["segments_per_s"],
                  "p50": tm["p50_ms"] / pb["p50_ms"], "p95": tm["p95_ms"] / pb["p95_ms"]}
    pool = {"segments": len(segs), "mib": len(segs) * 16, "lz4_ratio": lz4_ratio}
    if args.json:
        print(json.dumps({"machine": facts, "pool": pool, "rounds": rounds,
                          "median": median, "tidemark_over_pgbackrest": ratios}, indent=2))
        return
    for k, v in facts.items():
        print(f"{k:>11}: {v}")
    print(f"{'pool':>11}: {len(segs)} x 16 MiB real pgbench WAL segments"
          + (f", lz4 -1 ratio {lz4_ratio:.2f}x" if lz4_ratio else ""))
    print(f"\nmedians of {args.rounds} round(s), one process per segment:")
    print(f"{'tool':<11}{'seg/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'max RSS MiB':>13}"
          f"{'repo MiB':>10}{'pool/repo':>10}")
    for t in tools:
        m = median[t]
        print(f"{t:<11}{m['segments_per_s']:>9.1f}{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}"
              f"{m['max_rss_mib']:>13.1f}{m['repo_mib']:>10.1f}"
              f"{len(segs) * 16 / max(m['repo_mib'], 1e-9):>9.2f}x")
    if ratios:
        print(f"\ntidemark / pgBackRest: throughput {ratios['throughput']:.2f}x, "
              f"p50 {ratios['p50']:.2f}x, p95 {ratios['p95']:.2f}x (lower is better for p50/p95)")


if __name__ == "__main__":
    main()
