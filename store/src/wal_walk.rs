//! A walk over a stanza's WAL index (`stanzas/<stanza>/wal/`) one archived position at a
//! time, a listing page at a time ([`crate::backend::Pages`]): memory is one page and one
//! position's keys, however many files are archived. `expire` decides and removes WAL
//! this way, and garbage collection marks the blobs the index names.
//!
//! A position's keys are every index key whose file name starts with the same stem (the
//! part before the first `.`: a segment's 24 hex digits, a history file's timeline): the
//! entries of the segment, its `.partial` and `.backup` files, their `.content` sidecars
//! and their claims. They are adjacent in key order (they share the prefix
//! `<folder>/<stem>.`), and positions come in key order: timeline, then segment number,
//! then the history files (`history/` sorts after every segment folder).

use std::collections::VecDeque;

use crate::backend::{Backend, ObjectMeta, Pages};
use crate::catalog::{self, Stanza};
use crate::Result;

/// The walk (see the module doc).
#[derive(Debug)]
pub struct WalIndexWalk<'a> {
    pages: Pages<'a>,
    page: VecDeque<ObjectMeta>,
    group: Vec<ObjectMeta>,
}

impl<'a> WalIndexWalk<'a> {
    /// The walk over `stanza`'s WAL index.
    pub fn new(backend: &'a dyn Backend, stanza: &Stanza) -> WalIndexWalk<'a> {
        WalIndexWalk::over(Pages::new(backend, catalog::wal_prefix(stanza)))
    }

    /// The walk over the keys `pages` gives (a WAL index, or a part of one).
    pub fn over(pages: Pages<'a>) -> WalIndexWalk<'a> {
        WalIndexWalk {
            pages,
            page: VecDeque::new(),
            group: Vec::new(),
        }
    }

    /// The keys of the next position, in key order; `None` at the end.
    pub async fn next_position(&mut self) -> Result<Option<Vec<ObjectMeta>>> {
        loop {
            while let Some(m) = self.page.front() {
                if let Some(first) = self.group.first() {
                    if stem(first.key.as_str()) != stem(m.key.as_str()) {
                        return Ok(Some(std::mem::take(&mut self.group)));
                    }
                }
                self.group.extend(self.page.pop_front());
            }
            match self.pages.next_page().await? {
                Some(page) => self.page = page.into(),
                None if self.group.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.group))),
            }
        }
    }
}

/// A key up to the first `.` of its file name.
fn stem(key: &str) -> &str {
    let name_at = key.rfind('/').map_or(0, |i| i + 1);
    match key[name_at..].find('.') {
        Some(dot) => &key[..name_at + dot],
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::PutMode;
    use crate::{Digest, Key};
    use bytes::Bytes;

    #[tokio::test]
    async fn positions_come_whole_and_in_order_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path()).unwrap();
        let stanza = Stanza::new("main").unwrap();
        let d = Digest::of(b"x");
        let e = Digest::of(b"y");
        let names = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.partial",
            "000000010000000000000002.00000028.backup",
            "000000020000000000000002",
            "00000002.history",
        ];
        let mut expected: Vec<Vec<String>> = Vec::new();
        for name in names {
            let name: crate::pg::WalFileName = name.parse().unwrap();
            let keys = [
                catalog::wal_key(&stanza, &name, &d),
                catalog::wal_key(&stanza, &name, &e),
                catalog::wal_claim_key(&stanza, &name),
                crate::wal_content::wal_content_key(&stanza, &name, &d),
            ];
            for k in &keys {
                b.put(k, Bytes::from_static(b"r"), PutMode::Create)
                    .await
                    .unwrap();
            }
            let stem = name.to_string()
                [..name.to_string().find('.').unwrap_or(name.to_string().len())]
                .to_string();
            let mut keys: Vec<String> = keys.iter().map(Key::to_string).collect();
            match expected.last_mut() {
                Some(last) if last[0].contains(&format!("/{stem}.")) => last.append(&mut keys),
                _ => expected.push(keys),
            }
        }
        for g in &mut expected {
            g.sort();
        }
        // Another stanza's keys are not walked.
        let other = Stanza::new("main2").unwrap();
        let name: crate::pg::WalFileName = names[0].parse().unwrap();
        b.put(
            &catalog::wal_key(&other, &name, &d),
            Bytes::new(),
            PutMode::Create,
        )
        .await
        .unwrap();
        for limit in [1, 3, 1000] {
            let mut walk =
                WalIndexWalk::over(Pages::with_limit(&b, catalog::wal_prefix(&stanza), limit));
            let mut got = Vec::new();
            while let Some(group) = walk.next_position().await.unwrap() {
                got.push(
                    group
                        .into_iter()
                        .map(|m| m.key.to_string())
                        .collect::<Vec<_>>(),
                );
            }
            assert_eq!(got, expected, "pages of {limit}");
        }
    }
}
