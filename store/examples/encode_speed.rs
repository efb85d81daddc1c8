//! What archive-push's encoding costs per file: SHA-256 of the whole file and lz4 of its
//! 1 MiB frames, with liblz4 (the encoder) and lz4_flex (the encoder before it), best of
//! seven runs each. Numbers for `docs/performance.md`:
//!
//! ```text
//! cargo run --release -p tidemark-store --example encode_speed -- SEGMENT...
//! ```

use std::time::Instant;

use tidemark_store::codec::FRAME_RAW_MAX;
use tidemark_store::Digest;

fn best_of_seven(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut out = 0;
    for _ in 0..7 {
        let t = Instant::now();
        out = std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    (best, out)
}

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: encode_speed FILE...");
        std::process::exit(2);
    }
    let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(FRAME_RAW_MAX)];
    for path in paths {
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (sha, _) = best_of_seven(|| Digest::of(&raw).0[0] as usize);
        let (liblz4, liblz4_len) = best_of_seven(|| {
            raw.chunks(FRAME_RAW_MAX)
                .map(|frame| {
                    // SAFETY: live, non-overlapping slices; `out` holds lz4's worst case.
                    let n = unsafe {
                        lz4_sys::LZ4_compress_default(
                            frame.as_ptr().cast(),
                            out.as_mut_ptr().cast(),
                            frame.len() as i32,
                            out.len() as i32,
                        )
                    };
                    n as usize
                })
                .sum()
        });
        let (flex, flex_len) = best_of_seven(|| {
            raw.chunks(FRAME_RAW_MAX)
                .map(|frame| lz4_flex::block::compress_into(frame, &mut out).unwrap())
                .sum()
        });
        println!(
            "{path}: sha256 {sha:.2} ms; lz4 liblz4 {liblz4:.2} ms ({liblz4_len} bytes), \
             lz4_flex {flex:.2} ms ({flex_len} bytes)"
        );
    }
}
