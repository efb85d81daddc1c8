//! Prints how fast this machine hashes and compresses one file the way archive-push does:
//! SHA-256 alone, lz4 frames alone, and both together on two threads
//! (`EncodedBlob::encode`). A measuring tool, not a test.
//!
//! ```sh
//! cargo run --release -p tidemark-store --example encode_speed -- /path/to/wal/segment
//! ```

use std::time::{Duration, Instant};

use tidemark_store::repo::EncodedBlob;
use tidemark_store::{codec, Compression, Digest};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: encode_speed FILE");
        std::process::exit(2);
    };
    let data = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("encode_speed: cannot read {path}: {e}");
        std::process::exit(1);
    });
    let (mut hash, mut lz4, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut stored = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let digest = Digest::of(&data);
        hash.push(t.elapsed());
        let t = Instant::now();
        stored = codec::encode(Compression::Lz4, &data).len();
        lz4.push(t.elapsed());
        let t = Instant::now();
        let blob = EncodedBlob::encode(&data, Compression::Lz4);
        both.push(t.elapsed());
        assert_eq!(blob.digest, digest);
    }
    let mib = data.len() as f64 / (1 << 20) as f64;
    let rate = |d: Duration| mib / d.as_secs_f64();
    let (h, c, b) = (median(hash), median(lz4), median(both));
    println!(
        "{path}: {} bytes, lz4 ratio {:.2}x (medians of 7)",
        data.len(),
        data.len() as f64 / stored as f64
    );
    println!(
        "sha256            {:>8.2} ms  {:>7.0} MiB/s",
        h.as_secs_f64() * 1e3,
        rate(h)
    );
    println!(
        "lz4 frames        {:>8.2} ms  {:>7.0} MiB/s",
        c.as_secs_f64() * 1e3,
        rate(c)
    );
    println!(
        "both, 2 threads   {:>8.2} ms  {:>7.0} MiB/s",
        b.as_secs_f64() * 1e3,
        rate(b)
    );
}
