//! Decodes WAL segment files with `tidemark_pg::wal` and prints one line per record (or,
//! with `--summary`, counts and the decoding rate): a manual check against `pg_waldump`
//! and a throughput figure. The IO lives here, in the example, never in the library.
//!
//! ```text
//! cargo run --release -p tidemark-pg --example waldump -- [--summary] SEGMENT...
//! ```
//!
//! The segments must be consecutive and of one timeline; the segment size is the file's.

use std::time::Instant;

use tidemark_pg::wal::{DecoderConfig, Payload, WalDecoder};
use tidemark_pg::Lsn;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let summary = args.first().is_some_and(|a| a == "--summary");
    if summary {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("usage: waldump [--summary] SEGMENT...");
        std::process::exit(2);
    }
    let first = std::path::Path::new(&args[0]);
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    let seg_size = std::fs::metadata(first).expect("first segment").len();
    let log = u64::from_str_radix(&name[8..16], 16).expect("a WAL file name");
    let seg = u64::from_str_radix(&name[16..24], 16).expect("a WAL file name");
    let start = Lsn((log * (0x1_0000_0000 / seg_size) + seg) * seg_size);
    let mut d = WalDecoder::new(DecoderConfig::new(seg_size, start)).expect("decoder");
    let files: Vec<Vec<u8>> = args
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let t = Instant::now();
    let (mut records, mut commits, mut bytes) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    for f in &files {
        bytes += f.len() as u64;
        if let Err(e) = d.feed_into(f, &mut out) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        for r in out.drain(..) {
            records += 1;
            if matches!(r.payload, Payload::Commit(_)) {
                commits += 1;
            }
            if !summary {
                println!(
                    "rmgr: {:<11} len (rec/tot): {:>6}/{:>6}, tx: {:>10}, lsn: {}, prev {}, {:?}",
                    r.rmgr_name(),
                    r.header.tot_len - r.fpi_bytes,
                    r.header.tot_len,
                    r.header.xid,
                    r.lsn,
                    r.header.prev,
                    r.payload
                );
            }
        }
        if d.end().is_some() {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    match d.end() {
        Some(end) => eprintln!("end of WAL at {} ({:?})", end.at, end.reason),
        None => eprintln!("no end seen; record pending: {:?}", d.pending_record()),
    }
    eprintln!(
        "{records} records ({commits} commits) from {} MiB in {:.1} ms: {:.0} MiB/s",
        bytes >> 20,
        secs * 1e3,
        bytes as f64 / (1 << 20) as f64 / secs
    );
}
