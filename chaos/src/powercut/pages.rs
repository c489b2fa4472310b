//! What a file holds that was written but not yet fsynced: dirty pages over the durable
//! (backing) file, the logical size, and the point past which a truncate zeroed the durable
//! bytes. An fsync writes it all down; a power cut forgets it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Page size of the model.
pub const PAGE: u64 = 4096;

/// The unflushed state of one file.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Page index → the page's whole content as the writer sees it.
    pages: BTreeMap<u64, Vec<u8>>,
    /// The size the writer sees; `None` while it is the durable file's.
    size: Option<u64>,
    /// Durable bytes at or past this offset read as zero (a truncate cut them off).
    zero_from: Option<u64>,
}

impl Dirty {
    /// Whether anything is unflushed.
    pub fn is_clean(&self) -> bool {
        self.pages.is_empty() && self.size.is_none() && self.zero_from.is_none()
    }

    /// The size the writer sees.
    pub fn size(&self, durable: &File) -> io::Result<u64> {
        match self.size {
            Some(s) => Ok(s),
            None => Ok(durable.metadata()?.len()),
        }
    }

    /// Page `index` as the writer sees it (always PAGE bytes; past the size it is zeros).
    fn page(&self, durable: &File, index: u64) -> io::Result<Vec<u8>> {
        if let Some(p) = self.pages.get(&index) {
            return Ok(p.clone());
        }
        let mut buf = vec![0u8; PAGE as usize];
        let start = index * PAGE;
        let mut filled = 0usize;
        while filled < buf.len() {
            let n = durable.read_at(&mut buf[filled..], start + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let limit = match (self.zero_from, self.size) {
            (Some(z), Some(s)) => z.min(s),
            (Some(z), None) => z,
            (None, Some(s)) => s,
            (None, None) => u64::MAX,
        };
        if limit < start + PAGE {
            let from = limit.saturating_sub(start) as usize;
            buf[from..].fill(0);
        }
        Ok(buf)
    }

    /// Read `len` bytes at `offset`, as the writer sees the file.
    pub fn read(&self, durable: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let size = self.size(durable)?;
        if offset >= size {
            return Ok(Vec::new());
        }
        let end = size.min(offset + len as u64);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let page = self.page(durable, index)?;
            let from = (at - index * PAGE) as usize;
            let to = ((end - index * PAGE).min(PAGE)) as usize;
            out.extend_from_slice(&page[from..to]);
            at = index * PAGE + to as u64;
        }
        Ok(out)
    }

    /// Write `data` at `offset` (kept in memory).
    pub fn write(&mut self, durable: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let size = self.size(durable)?;
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let mut page = self.page(durable, index)?;
            let from = (at - index * PAGE) as usize;
            let to = ((end - index * PAGE).min(PAGE)) as usize;
            let src = (at - offset) as usize;
            page[from..to].copy_from_slice(&data[src..src + (to - from)]);
            self.pages.insert(index, page);
            at = index * PAGE + to as u64;
        }
        self.size = Some(size.max(end));
        Ok(())
    }

    /// Set the size to `len` (kept in memory).
    pub fn truncate(&mut self, durable: &File, len: u64) -> io::Result<()> {
        let size = self.size(durable)?;
        if len < size {
            // The page holding `len` keeps its head; whole pages past it go.
            let index = len / PAGE;
            let mut head = self.page(durable, index)?;
            head[(len - index * PAGE) as usize..].fill(0);
            self.pages.retain(|i, _| *i <= index);
            if len.is_multiple_of(PAGE) {
                self.pages.remove(&index);
            } else {
                self.pages.insert(index, head);
            }
            self.zero_from = Some(self.zero_from.map_or(len, |z| z.min(len)));
        }
        self.size = Some(len);
        Ok(())
    }

    /// Write everything down and fsync the durable file.
    pub fn flush(&mut self, durable: &File) -> io::Result<()> {
        if self.is_clean() {
            return durable.sync_data();
        }
        let size = self.size(durable)?;
        if let Some(z) = self.zero_from {
            // Zero the cut-off durable bytes (set_len down then up leaves zeros).
            durable.set_len(z.min(durable.metadata()?.len()))?;
        }
        for (index, page) in &self.pages {
            let start = index * PAGE;
            if start >= size {
                continue;
            }
            let len = (size - start).min(PAGE) as usize;
            durable.write_all_at(&page[..len], start)?;
        }
        durable.set_len(size)?;
        durable.sync_data()?;
        *self = Dirty::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, f)
    }

    fn durable(f: &File) -> Vec<u8> {
        let mut v = vec![0; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn writes_are_seen_but_not_durable_until_flushed() {
        let (_d, f) = file(b"hello world");
        let mut dirty = Dirty::default();
        dirty.write(&f, 6, b"skiff!").unwrap();
        dirty.write(&f, 5000, b"far").unwrap();
        assert_eq!(dirty.read(&f, 0, 12).unwrap(), b"hello skiff!");
        assert_eq!(dirty.size(&f).unwrap(), 5003);
        assert_eq!(dirty.read(&f, 4999, 10).unwrap(), b"\0far");
        assert_eq!(durable(&f), b"hello world");
        dirty.flush(&f).unwrap();
        assert!(dirty.is_clean());
        let d = durable(&f);
        assert_eq!(&d[..12], b"hello skiff!");
        assert_eq!(d.len(), 5003);
        assert_eq!(&d[5000..], b"far");
    }

    #[test]
    fn a_power_cut_forgets_unflushed_writes() {
        let (_d, f) = file(b"durable");
        let mut dirty = Dirty::default();
        dirty.write(&f, 0, b"volatile-and-longer").unwrap();
        // The cut: the dirty state is dropped.
        let dirty = Dirty::default();
        assert_eq!(dirty.read(&f, 0, 100).unwrap(), b"durable");
    }

    #[test]
    fn truncate_then_extend_reads_zeros_where_durable_bytes_were() {
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let (_d, f) = file(&content);
        let mut dirty = Dirty::default();
        dirty.truncate(&f, 100).unwrap();
        dirty.write(&f, 9000, b"x").unwrap();
        let seen = dirty.read(&f, 0, 20_000).unwrap();
        assert_eq!(seen.len(), 9001);
        assert_eq!(&seen[..100], &content[..100]);
        assert!(seen[100..9000].iter().all(|b| *b == 0));
        dirty.flush(&f).unwrap();
        assert_eq!(durable(&f), seen);
    }
}
