#!/usr/bin/env python3
"""Asynchronous archiving benchmark: a backlog of WAL segments through tidemark's spool,
tidemark synchronously, and pgBackRest 2.45's asynchronous archive-push.

What it measures: PostgreSQL's archiver working off a backlog (all segments `.ready` at
once, as after a burst of writes or a store outage), one archive-push process per segment
in name order, the next one started when the previous exits 0, as the archiver does.
  * ack seg/s, p50/p95: how fast the archiver gets its answers;
  * in-repo s: from the first call until every segment is in the repository (tidemark
    async: until its drainer has emptied the spool);
  * peak RSS of the archive-push processes (not of background drainers).

Modes (alternated per round, rotating which goes first):
  * tidemark-sync:  `archive-push` into a local repository;
  * tidemark-async: `archive_async = true`: exit 0 once durable in the spool; the drainer
                    it starts moves segments into the same kind of repository;
  * pgbackrest-async: archive-async=y, process-max=2, lz4, posix repository. Its archive-push
                    exits 0 only once the segment is in the repository (its async process
                    pushes the `.ready` backlog in parallel and leaves `.ok` files).
With --s3, tidemark's two modes use an S3 repository on a local s3s-fs server (plain HTTP
on loopback, so no network latency: a real store adds some per request, which the
asynchronous mode hides and the synchronous one pays). pgBackRest needs TLS for S3, which
s3s-fs does not speak, so it stays on a posix repository as the reference.
The segments are the pool bench/archive-push.py prepares (real pgbench WAL, cached in
--workdir). pgBackRest reads `.ready` files from the segment's folder, so each round builds
a data directory (pg_control and PG_VERSION from the pool's cluster) whose pg_wal holds
hard links to the pool, and renames `.ready` to `.done` after each success, as PostgreSQL does.
"""
import importlib.util, json, os, pwd, secrets, shutil, socket, statistics
import subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("archive_push", f"{HERE}/archive-push.py")
ap_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ap_bench)
sh, du, BenchError = ap_bench.sh, ap_bench.du, ap_bench.BenchError

MODES = ("tidemark-sync", "tidemark-async", "pgbackrest-async")


def build_pgdata(src, dest, segs, user):
    """A data directory pgBackRest accepts, whose pg_wal holds the backlog, all .ready."""
    os.makedirs(f"{dest}/global")
    os.makedirs(f"{dest}/pg_wal/archive_status")
    shutil.copy(f"{src}/global/pg_control", f"{dest}/global/pg_control")
    shutil.copy(f"{src}/PG_VERSION", f"{dest}/PG_VERSION")
    for s in segs:
        name = os.path.basename(s)
        os.link(s, f"{dest}/pg_wal/{name}")
        open(f"{dest}/pg_wal/archive_status/{name}.ready", "w").close()
    sh(["chown", "-R", f"{user}:", dest])


class S3:
    """A local s3s-fs server with one bucket, for the tidemark modes."""

    def __init__(self, workdir):
        binary = shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs")
        if not os.access(binary, os.X_OK):
            raise BenchError("--s3 needs s3s-fs (cargo install s3s-fs@0.14.1 --features binary)")
        self.data = f"{workdir}/runs/s3"
        shutil.rmtree(self.data, ignore_errors=True)
        os.makedirs(f"{self.data}/bench")
        self.key, self.secret = "AK" + secrets.token_hex(8).upper(), secrets.token_hex(20)
        self.port = ap_bench.free_port()
        self.proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", self.key,
             "--secret-key", self.secret, self.data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise BenchError("s3s-fs did not start")
                time.sleep(0.05)

    def args(self, prefix):
        return ["--repo", f"s3://bench/{prefix}", "--s3-endpoint",
                f"http://127.0.0.1:{self.port}", "--s3-path-style", "true", "--s3-region",
                "us-east-1", "--s3-access-key-id", self.key, "--s3-secret-access-key", self.secret]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def wait_drained(tm_cmd, env, prefix, timeout=600):
    """Waits until tidemark's spool is empty; returns when it was seen empty."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(prefix + tm_cmd + ["spool", "status", "--json"], capture_output=True,
                           text=True, env=env)
        if r.returncode != 0:
            raise BenchError(f"spool status failed: {r.stderr.strip()}")
        if json.loads(r.stdout)["files"] == 0:
            return time.perf_counter()
        time.sleep(0.05)
    raise BenchError("the spool did not drain within 10 minutes")


def run_mode(args, user, segs, mode, base, s3):
    pw = pwd.getpwnam(user)
    work = f"{base}/{mode}"
    repo, spool, pgdata = f"{work}/repo", f"{work}/spool", f"{work}/pg"
    for d in (repo, spool, f"{work}/pgbr/lock", f"{work}/pgbr/log"):
        os.makedirs(d)
    build_pgdata(f"{args.workdir}/pg", pgdata, segs, user)
    sh(["chown", "-R", f"{user}:", work])
    env = dict(os.environ, HOME=pw.pw_dir, USER=user, LOGNAME=user)
    setpriv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
    prefix = setpriv + ["/usr/bin/time", "-f", "%M"]
    prefix_name = f"{os.path.basename(base)}-{mode}"
    repo_args = s3.args(prefix_name) if s3 else ["--repo", f"file://{repo}"]
    tm = [args.tidemark] + repo_args + ["--stanza", "main"]
    if mode == "tidemark-async":
        tm += ["--archive-async", "true", "--spool-path", spool]
    if mode != "pgbackrest-async":
        # Only init creates a repository (and the stanza), from the data directory's pg_control.
        sh(tm + ["--pgdata", pgdata, "init", "--offline"], user)
    pgbr = [shutil.which("pgbackrest"), f"--config={work}/pgbackrest.conf", "--stanza=main"]
    if mode == "pgbackrest-async":
        with open(f"{work}/pgbackrest.conf", "w") as f:
            f.write(f"[global]\ncompress-type=lz4\narchive-async=y\nprocess-max=2\n"
                    f"spool-path={work}/pgbr\nlock-path={work}/pgbr/lock\n"
                    f"log-path={work}/pgbr/log\nrepo1-path={repo}\n\n[main]\npg1-path={pgdata}\n")
        sh(["chown", f"{user}:", f"{work}/pgbackrest.conf"])
        sh(pgbr + ["--no-online", "stanza-create"], user)
    times, rss = [], 0
    start = time.perf_counter()
    for s in segs:
        name = os.path.basename(s)
        wal = f"{pgdata}/pg_wal/{name}"
        cmd = (pgbr + ["archive-push", wal]) if mode == "pgbackrest-async" \
            else tm + ["archive-push", wal]
        elapsed, kib = ap_bench.timed_call(prefix, cmd, f"{mode} archive-push of {name}",
                                           cwd=work, env=env)
        times.append(elapsed)
        rss = max(rss, kib)
        st = f"{pgdata}/pg_wal/archive_status/{name}"
        os.rename(f"{st}.ready", f"{st}.done")
    acked = time.perf_counter()
    in_repo = wait_drained(tm, env, setpriv) if mode == "tidemark-async" else acked
    ms = sorted(x * 1000 for x in times)
    out = {"ack_segments_per_s": len(segs) / (acked - start),
           "p50_ms": statistics.median(ms),
           "p95_ms": ap_bench.p95(ms),
           "in_repo_s": in_repo - start, "max_rss_mib": rss / 1024,
           "repo_mib": du(f"{s3.data}/bench/{prefix_name}" if s3 and mode != "pgbackrest-async"
                         else repo) / 2**20}
    if mode == "tidemark-async":
        time.sleep(11)  # let the drainer's linger end before the folder goes
    shutil.rmtree(work)
    return out


def main():
    ap = ap_bench.segment_bench_args(__doc__, 100, MODES)
    ap.add_argument("--s3", action="store_true", help="tidemark into S3 (a local s3s-fs)")
    args = ap.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    modes = tuple(m for m in MODES if not args.only or m in args.only.split(","))
    if not modes or args.segments < 1 or args.rounds < 1:
        ap.error("nothing to measure")
    if any(m.startswith("tidemark") for m in modes) and not os.access(args.tidemark, os.X_OK):
        ap.error(f"no tidemark binary at {args.tidemark}")
    if "pgbackrest-async" in modes and not shutil.which("pgbackrest"):
        sh(["apt-get", "install", "-y", "pgbackrest"])
    s3 = None
    try:
        segs, _ = ap_bench.prepare(args, args.user)
        s3 = S3(args.workdir) if args.s3 else None
        rounds = []
        for rnd in range(args.rounds):
            base = f"{args.workdir}/runs/async{rnd}"
            shutil.rmtree(base, ignore_errors=True)
            os.makedirs(base)
            order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
            print(f"round {rnd + 1}/{args.rounds}: {len(segs)} segments, {' then '.join(order)}",
                  file=sys.stderr)
            rounds.append({m: run_mode(args, args.user, segs, m, base, s3) for m in order})
            shutil.rmtree(base, ignore_errors=True)
    except BenchError as e:
        sys.exit(f"archive-async bench: {e}")
    finally:
        if s3:
            s3.stop()
    keys = rounds[0][modes[0]].keys()
    median = {m: {k: statistics.median(r[m][k] for r in rounds) for k in keys} for m in modes}
    if args.json:
        print(json.dumps({"segments": len(segs), "rounds": rounds, "median": median}, indent=2))
        return
    where = "tidemark into S3 (local s3s-fs), pgBackRest posix" if args.s3 else "posix repositories"
    print(f"medians of {args.rounds} round(s), a backlog of {len(segs)} x 16 MiB segments, {where}:")
    print(f"{'mode':<18}{'ack seg/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'in repo s':>11}"
          f"{'max RSS MiB':>13}{'repo MiB':>10}")
    for m in modes:
        x = median[m]
        print(f"{m:<18}{x['ack_segments_per_s']:>10.1f}{x['p50_ms']:>9.1f}{x['p95_ms']:>9.1f}"
              f"{x['in_repo_s']:>11.2f}{x['max_rss_mib']:>13.1f}{x['repo_mib']:>10.1f}")


if __name__ == "__main__":
    main()
