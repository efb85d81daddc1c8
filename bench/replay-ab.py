#!/usr/bin/env python3
"""Replay alone, many rounds: the `cp` floor against one or more tidemark builds.

`bench/restore-pitr.py` times a whole point-in-time restore three rounds at a time, and
its replay figure moves by a second from round to round on this shared machine. This
script isolates the replay and repeats it cheaply, to tell a change to the replay feed
from noise. It reuses what restore-pitr.py left in its work folder (run that first): the
floor's data directory (a tidemark restore of the backup), the WAL folder, the tidemark
repository, and the target time it saved in `target`.

Each round, for every way in turn (the order rotates from round to round): `cp -a` of the
floor's data directory into a fresh folder, its restore_command set to the way's (`cp`
from the WAL folder, or `BIN archive-get --timeline 1 --latest %f %p` against the
repository), the same target time and `recovery_target_action = 'promote'`; sync; start
the server as the bench user; seconds from `pg_ctl start` until the log says "recovery
stopping before". Prints each figure, then per way the median, every value and the ratio
to the floor's median. It asserts nothing.

    python3 bench/replay-ab.py --rounds 10 floor target/release/tidemark /tmp/tidemark-before
"""
import argparse, importlib.util, os, shutil, socket, statistics, subprocess, time

PGBIN = "/usr/lib/postgresql/15/bin"

# The recovery block is rewritten as restore-pitr.py rewrites the floor's.
_spec = importlib.util.spec_from_file_location(
    "restore_pitr", os.path.join(os.path.dirname(os.path.abspath(__file__)), "restore-pitr.py"))
restore_pitr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(restore_pitr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/tidemark-bench-pitr")
    ap.add_argument("--user", default="tidemark-bench")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before each start (as after restore-pitr.py's "
                         "settle, when this VM's DAMON reclaim has evicted idle pages)")
    ap.add_argument("ways", nargs="+", help="`floor`, or the path of a tidemark binary")
    args = ap.parse_args()
    w = args.workdir
    target = open(f"{w}/target").read().strip()
    as_user = ["setpriv", f"--reuid={args.user}", f"--regid={args.user}", "--init-groups"]
    runs = f"{w}/runs/replay-ab"

    def replay(i, way):
        dest = f"{runs}/{i}"
        for d in (dest, dest + ".sock"):
            shutil.rmtree(d, ignore_errors=True)
        subprocess.run(["cp", "-a", f"{w}/floor-base", dest], check=True)
        if way == "floor":
            command = f"cp {w}/wal/%f %p"
        else:
            command = (f"{os.path.abspath(way)} --repo file://{w}/tm-repo --stanza main "
                       "archive-get --timeline 1 --latest %f %p")
        restore_pitr.set_recovery(f"{dest}/postgresql.auto.conf", command, target)
        os.makedirs(dest + ".sock")
        shutil.chown(dest + ".sock", args.user)
        log = dest + ".log"
        open(log, "w").close()
        shutil.chown(log, args.user)
        subprocess.run(["sync"], check=True)
        if args.cold:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        t0 = time.perf_counter()
        subprocess.run(as_user + [f"{PGBIN}/pg_ctl", "-D", dest, "-l", log, "start", "-o",
                                  f"-k {dest}.sock -p {free_port()} -c listen_addresses='' "
                                  "-c archive_mode=off"],
                       check=True, stdout=subprocess.DEVNULL)
        stopped = None
        try:
            while True:
                text = open(log).read()
                if stopped is None and "recovery stopping before" in text:
                    stopped = time.perf_counter() - t0
                if "ready to accept connections" in text:
                    break
                if "FATAL" in text or time.perf_counter() - t0 > 600:
                    raise SystemExit(f"{way}: the server did not recover:\n{text[-2000:]}")
                time.sleep(0.005)
        finally:
            subprocess.run(as_user + [f"{PGBIN}/pg_ctl", "-D", dest, "-m", "immediate", "-w",
                                      "stop"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if stopped is None:
            raise SystemExit(f"{way}: recovery never reported reaching the target")
        return stopped

    os.makedirs(runs, exist_ok=True)
    shutil.chown(runs, args.user)
    figures = {way: [] for way in args.ways}
    for r in range(args.rounds):
        order = args.ways[r % len(args.ways):] + args.ways[:r % len(args.ways)]
        for way in order:
            figures[way].append(replay(args.ways.index(way), way))
            print(f"round {r + 1} {way}: {figures[way][-1]:.3f} s", flush=True)
    shutil.rmtree(runs, ignore_errors=True)
    floor = statistics.median(figures["floor"]) if "floor" in figures else None
    print(f"\nreplay to {target}, median of {args.rounds} rounds:")
    for way, values in figures.items():
        m = statistics.median(values)
        ratio = f"  {m / floor:.3f}x the floor" if floor else ""
        print(f"  {way}: {m:.3f} s{ratio}  ({', '.join(f'{v:.2f}' for v in sorted(values))})")


if __name__ == "__main__":
    main()
