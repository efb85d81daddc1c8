#!/usr/bin/env python3
"""Two (or more) tidemark builds' archive-push, segment by segment: a paired comparison.

What it measures: the wall time of one `archive-push` process per segment, as the parent
sees it (fork to exit), for each variant in turn on the same segment, the order rotating
from segment to segment. Each variant pushes into a fresh local repository of its own.

Why paired: on this shared machine the time of a whole run of 40 pushes wanders by 5-10%
from one minute to the next, which hides a change of 1-3% (`archive-push-ab.sh` compares
such runs). Here both variants push the same segment within a few tens of milliseconds of
each other, so the per-segment difference cancels most of the machine's drift; its median
is the figure to read.

A variant is `BIN` or `BIN|NAME=VALUE ...` (environment set for that variant only, for a
build that carries a temporary switch). Each segment is read once (`cat`) before it is
pushed, so that no variant pays for bringing it back into the page cache.

    python3 bench/archive-push-pair.py --segments 150 NEW_BIN OLD_BIN
    python3 bench/archive-push-pair.py 'BIN|TM_SWITCH=1' BIN

Pool and cluster: run archive-push.py once first (--workdir, default /tmp/tidemark-bench).
Prints per variant p25/p50/p75/mean ms, and the median and mean of the paired difference
of every variant against the first.
"""
import argparse, os, shutil, statistics, subprocess, sys, time


def variant(spec):
    binary, _, env = spec.partition("|")
    extra = dict(kv.split("=", 1) for kv in env.split())
    return binary, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="BIN or 'BIN|NAME=VALUE ...'")
    ap.add_argument("--segments", type=int, default=150)
    ap.add_argument("--skip", type=int, default=20, help="pool segments to leave out first")
    ap.add_argument("--workdir", default="/tmp/tidemark-bench")
    args = ap.parse_args()
    pool = os.path.join(args.workdir, "pool")
    if not os.path.isdir(pool):
        sys.exit(f"archive-push-pair: no pool at {pool}: run bench/archive-push.py once first")
    segments = sorted(f for f in os.listdir(pool) if len(f) == 24)
    segments = segments[args.skip:args.skip + args.segments]
    variants = [variant(v) for v in args.variants]
    repos = []
    for i, (binary, _) in enumerate(variants):
        repo = f"/tmp/tidemark-ab/pair-{i}"
        shutil.rmtree(repo, ignore_errors=True)
        os.makedirs(repo)
        subprocess.run([binary, "--repo", "file://" + repo, "--pgdata",
                        os.path.join(args.workdir, "pg"), "init", "--offline"],
                       check=True, stdout=subprocess.DEVNULL)
        repos.append(repo)
    times = [[] for _ in variants]
    for k, segment in enumerate(segments):
        path = os.path.join(pool, segment)
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
        order = list(range(len(variants)))
        order = order[k % len(order):] + order[:k % len(order)]
        for i in order:
            binary, extra = variants[i]
            started = time.perf_counter()
            r = subprocess.run([binary, "--repo", "file://" + repos[i], "archive-push", path],
                               env=dict(os.environ, **extra), stderr=subprocess.PIPE, text=True)
            elapsed = (time.perf_counter() - started) * 1000
            if r.returncode != 0:
                sys.exit(f"archive-push-pair: {args.variants[i]} exited {r.returncode} on "
                         f"{segment}: {r.stderr.strip()}")
            times[i].append(elapsed)
    print(f"{len(segments)} segments, one process each per variant, order rotating")
    for spec, t in zip(args.variants, times):
        s = sorted(t)
        print(f"{spec:44s} p25 {s[len(s) // 4]:6.2f}  p50 {statistics.median(s):6.2f}  "
              f"p75 {s[3 * len(s) // 4]:6.2f}  mean {statistics.mean(s):6.2f} ms")
    for spec, t in zip(args.variants[1:], times[1:]):
        d = [a - b for a, b in zip(t, times[0])]
        print(f"{spec} minus {args.variants[0]}: median {statistics.median(d):+.2f} ms, "
              f"mean {statistics.mean(d):+.2f} ms")


if __name__ == "__main__":
    main()
