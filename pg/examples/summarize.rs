//! Summarises WAL segment files with `tidemark_pg::wal::summarize_segment`, as
//! archive-push does for every segment it stores, and prints each summary's counts and
//! the time it took: the figure behind archive-push's cost of the content index. The IO
//! lives here, in the example, never in the library.
//!
//! ```text
//! cargo run --release -p tidemark-pg --example summarize -- [--repeat N] SEGMENT...
//! ```
//!
//! Each file is summarised on its own (its name gives its start; the segment size is the
//! file's), `N` times (default 5); the best and median times are printed.

use std::time::{Duration, Instant};

use tidemark_pg::wal::summarize_segment;
use tidemark_pg::Lsn;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 5;
    if args.first().is_some_and(|a| a == "--repeat") {
        repeat = args[1].parse().expect("--repeat N");
        args.drain(..2);
    }
    if args.is_empty() {
        eprintln!("usage: summarize [--repeat N] SEGMENT...");
        std::process::exit(2);
    }
    let mut all = Vec::new();
    for path in &args {
        let path = std::path::Path::new(path);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(path).expect("a readable segment");
        let seg_size = bytes.len() as u64;
        let log = u64::from_str_radix(&name[8..16], 16).expect("a WAL file name");
        let seg = u64::from_str_radix(&name[16..24], 16).expect("a WAL file name");
        let start = Lsn(log * 0x1_0000_0000 + seg * seg_size);
        let mut times = Vec::new();
        let mut summary = None;
        for _ in 0..repeat {
            let t = Instant::now();
            let s = summarize_segment(&bytes, seg_size, start, None);
            times.push(t.elapsed());
            summary = Some(s);
        }
        times.sort();
        let best = times[0];
        let median = times[times.len() / 2];
        all.push(median);
        match summary.unwrap() {
            Ok(s) => println!(
                "{name}: {} records, {} commits, {} aborts, {} restore points, crossing {}/{}, \
                 damage {:?}; best {:.2} ms, median {:.2} ms ({:.0} MB/s)",
                s.records,
                s.xacts.map_or(0, |x| x.commits),
                s.xacts.map_or(0, |x| x.aborts),
                s.restore_points.len() as u32 + s.restore_points_omitted,
                s.crossing_end.is_some(),
                s.crossing_start.is_some(),
                s.damage.map(|d| d.to_string()),
                ms(best),
                ms(median),
                seg_size as f64 / median.as_secs_f64() / 1e6,
            ),
            Err(e) => println!("{name}: {e}"),
        }
    }
    all.sort();
    println!(
        "{} segments, median of medians {:.2} ms per segment",
        all.len(),
        ms(all[all.len() / 2])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
