//! The backup file: a versioned header, the store's records, and an end that closes with a
//! checksum of everything before it.
//!
//! ```text
//!  "SKIFFBAK" │ format u32 LE │ header length u32 LE │ header (JSON) │ records │ end
//!
//!  format 2 (written): records  each key and value as a u64 LE length and its bytes
//!                      end      "SKIFFEND" │ records u64 LE │ records' bytes u64 LE │ BLAKE3
//!  format 1 (read):    records  their count (u64 LE), then as in format 2
//!                      end      SHA-256; the counts are in the header
//! ```
//!
//! The records are the pairs of a Raft snapshot's body, so a restore installs them as one.
//! Format 2 puts the counts after the records, so that a member sends its records while it
//! is still capturing them, and hashes with BLAKE3, several times faster than SHA-256 on one
//! core: a backup goes at the speed of the disk, not of the hash. The checksum covers the
//! header too: a flipped bit anywhere, or a file cut short, is refused before anything is
//! written.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"SKIFFBAK";
/// The format this build writes.
pub const FORMAT: u32 = 2;
/// The formats this build reads.
pub const READS: [u32; 2] = [1, 2];
/// Where a format-2 file's end starts.
const END_MAGIC: &[u8; 8] = b"SKIFFEND";
const CHECKSUM_LEN: usize = 32;
const PREAMBLE_LEN: usize = MAGIC.len() + 4 + 4;
/// A format-1 body starts with its record count.
const V1_COUNT_LEN: u64 = 8;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The cluster it was taken from.
    pub cluster_id: String,
    /// The member that wrote it.
    pub member_id: u64,
    /// The store revision it holds every change up to.
    pub revision: u64,
    /// The Raft log index and term of the last change it holds.
    pub raft_index: u64,
    /// The term of that entry.
    pub raft_term: u64,
    /// How many records it holds (in format 2, known at its end and written there).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records: u64,
    /// The bytes of the records (as `records`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records_bytes: u64,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// The version of Skiff that wrote it.
    pub written_by: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a file is not a backup this build can use.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// It does not start as a backup does.
    #[error(
        "not a Skiff backup (it does not start with {:?})",
        String::from_utf8_lossy(MAGIC)
    )]
    NotABackup,
    /// Written in a format this build does not read.
    #[error("backup format {found} is not one this build reads (it reads formats {supported:?})")]
    UnsupportedFormat {
        /// The file's format.
        found: u32,
        /// This build's.
        supported: [u32; 2],
    },
    /// Shorter or longer than its header says.
    #[error(
        "the backup is truncated or has extra bytes: {found} bytes, its header says {expected}"
    )]
    WrongLength {
        /// The length the header implies.
        expected: u64,
        /// The file's length.
        found: u64,
    },
    /// Its end is not where the file ends.
    #[error("the backup is truncated or has extra bytes: {found} bytes, and its end is not at the end of them")]
    NoEnd {
        /// The file's length.
        found: u64,
    },
    /// The checksum does not match its contents.
    #[error("the backup's checksum does not match its contents (corrupted): expected {expected}, computed {computed}")]
    Checksum {
        /// The checksum in the file.
        expected: String,
        /// The checksum of what the file holds.
        computed: String,
    },
    /// The header does not read.
    #[error("the backup's header does not read: {0}")]
    Header(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What differs between the formats this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// SHA-256, the counts in the header, the records' count before them.
    V1,
    /// BLAKE3, the counts in the end.
    V2,
}

impl Layout {
    fn of(format: u32) -> Result<Self, FormatError> {
        match format {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            found => Err(FormatError::UnsupportedFormat {
                found,
                supported: READS,
            }),
        }
    }

    /// The bytes after the records.
    fn end_len(self) -> usize {
        match self {
            Self::V1 => CHECKSUM_LEN,
            Self::V2 => END_MAGIC.len() + 8 + 8 + CHECKSUM_LEN,
        }
    }

    /// A checksum as printed: its algorithm, then its hex.
    fn named(self, sum: &[u8]) -> String {
        match self {
            Self::V1 => format!("sha256:{}", hex(sum)),
            Self::V2 => format!("blake3:{}", hex(sum)),
        }
    }

    fn hasher(self) -> Hasher {
        match self {
            Self::V1 => Hasher::Sha256(Sha256::new()),
            Self::V2 => Hasher::Blake3(Box::default()),
        }
    }
}

/// The running checksum of a file of either format.
enum Hasher {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    fn finish(self) -> [u8; CHECKSUM_LEN] {
        match self {
            Self::Sha256(h) => h.finalize().into(),
            Self::Blake3(h) => h.finalize().into(),
        }
    }
}

/// Writes a file of this build's format as its parts go by: the start, the records in
/// pieces, then the end once their count is known. Memory holds none of the records.
#[derive(Debug)]
pub struct Encoder {
    hasher: blake3::Hasher,
    records_bytes: u64,
}

impl Encoder {
    /// The encoder of a file for `header` (its counts are not written there), with the
    /// file's first bytes: magic, format, the header's length, the header.
    pub fn start(header: &BackupHeader) -> Result<(Self, Vec<u8>), FormatError> {
        let header = BackupHeader {
            records: 0,
            records_bytes: 0,
            ..header.clone()
        };
        let head = serde_json::to_vec(&header).map_err(|e| FormatError::Header(e.to_string()))?;
        let head_len = u32::try_from(head.len()).map_err(|e| FormatError::Header(e.to_string()))?;
        let mut out = Vec::with_capacity(PREAMBLE_LEN + head.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&head_len.to_le_bytes());
        out.extend_from_slice(&head);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&out);
        let me = Self {
            hasher,
            records_bytes: 0,
        };
        Ok((me, out))
    }

    /// The next bytes of the records, as they are written.
    pub fn records(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.records_bytes += bytes.len() as u64;
    }

    /// The file's last bytes, after `records` records.
    pub fn end(mut self, records: u64) -> Vec<u8> {
        let mut end = Vec::with_capacity(Layout::V2.end_len());
        end.extend_from_slice(END_MAGIC);
        end.extend_from_slice(&records.to_le_bytes());
        end.extend_from_slice(&self.records_bytes.to_le_bytes());
        self.hasher.update(&end);
        end.extend_from_slice(self.hasher.finalize().as_bytes());
        end
    }
}

#[cfg(test)]
/// The whole file for `header` and `pairs`, `records` of them, in memory (the tests').
pub fn encode(header: &BackupHeader, records: u64, pairs: &[u8]) -> Result<Vec<u8>, FormatError> {
    let (mut encoder, mut out) = Encoder::start(header)?;
    encoder.records(pairs);
    out.extend_from_slice(pairs);
    out.extend_from_slice(&encoder.end(records));
    Ok(out)
}

/// A backup file checked whole.
#[derive(Debug, Clone)]
pub struct VerifiedFile {
    /// Its header, with the counts of its records.
    pub header: BackupHeader,
    /// Its checksum: `blake3:` (format 2) or `sha256:` (format 1), then hex.
    pub checksum: String,
    /// Where its records' pairs start in the file.
    pub pairs_at: u64,
    /// Their bytes (`header.records` pairs).
    pub pairs_bytes: u64,
    /// The format it was written in.
    pub format: u32,
}

/// Check the backup file at `path` (magic, format, length, checksum), reading it in pieces:
/// memory does not grow with its size.
pub fn verify_file(path: &std::path::Path) -> Result<VerifiedFile, VerifyError> {
    use std::io::Read;
    let io = |e: std::io::Error| VerifyError::Io(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut checker = Checker::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        checker.update(&buf[..n])?;
    }
    Ok(checker.finish()?)
}

/// Headers longer than this are refused before they are held: a real one is a few hundred
/// bytes, and a damaged length must not make a reader buffer the whole file.
const MAX_HEADER_LEN: usize = 1 << 20;

/// Checks a backup as its bytes go by, received or read from disk (magic, format, length,
/// checksum): memory holds the header and the file's last bytes seen (its end, if it ends
/// there), not the file.
#[derive(Default)]
pub struct Checker {
    /// The file's start until its header is complete.
    start: Vec<u8>,
    /// Where the header ends, and the file's layout, once the preamble is read.
    head: Option<(usize, Layout)>,
    /// Once the header is complete: everything before `tail` hashed.
    hasher: Option<Hasher>,
    /// The last bytes seen, not hashed yet: the end, if the file ends here.
    tail: Vec<u8>,
    len: u64,
}

impl Checker {
    /// The next bytes of the file. Refuses at once what is not a backup of a format this
    /// build reads.
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), FormatError> {
        self.len += bytes.len() as u64;
        if self.hasher.is_none() {
            bytes = self.take_head(bytes)?;
        }
        let (Some(hasher), Some((_, layout))) = (self.hasher.as_mut(), self.head) else {
            return Ok(());
        };
        // All but the last bytes seen are hashed: those may be the end.
        let keep = layout.end_len();
        let seen = self.tail.len() + bytes.len();
        if seen <= keep {
            self.tail.extend_from_slice(bytes);
            return Ok(());
        }
        let hash = seen - keep;
        let from_tail = hash.min(self.tail.len());
        hasher.update(&self.tail[..from_tail]);
        hasher.update(&bytes[..hash - from_tail]);
        self.tail.drain(..from_tail);
        self.tail.extend_from_slice(&bytes[hash - from_tail..]);
        Ok(())
    }

    /// Keep the preamble and the header from `bytes`; once the header is whole, hash it.
    /// Returns what follows the header.
    fn take_head<'b>(&mut self, mut bytes: &'b [u8]) -> Result<&'b [u8], FormatError> {
        while !bytes.is_empty() && self.hasher.is_none() {
            let want = self.head.map_or(PREAMBLE_LEN, |(end, _)| end);
            let take = bytes.len().min(want - self.start.len());
            self.start.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.is_none() && self.start.len() == PREAMBLE_LEN {
                let (layout, head_len) = preamble(&self.start)?;
                if head_len > MAX_HEADER_LEN {
                    return Err(FormatError::Header(format!(
                        "{head_len} bytes long; no backup's header is over {MAX_HEADER_LEN}"
                    )));
                }
                self.head = Some((PREAMBLE_LEN + head_len, layout));
            }
            if let Some((end, layout)) = self.head.filter(|(end, _)| self.start.len() == *end) {
                let mut hasher = layout.hasher();
                hasher.update(&self.start[..end]);
                self.hasher = Some(hasher);
            }
        }
        Ok(bytes)
    }

    /// The whole file has been seen: its length against what it says, then its checksum.
    pub fn finish(self) -> Result<VerifiedFile, FormatError> {
        let Some((head_end, layout)) = self.head else {
            return Err(FormatError::NotABackup);
        };
        let at_least = (head_end + layout.end_len()) as u64;
        let Some(mut hasher) = self.hasher.filter(|_| self.len >= at_least) else {
            return Err(FormatError::WrongLength {
                expected: at_least,
                found: self.len,
            });
        };
        let head_end = head_end as u64;
        let header = serde_json::from_slice::<BackupHeader>(&self.start[PREAMBLE_LEN..]);
        // The length first (a file cut short says so), then the checksum, before anything
        // the file says is trusted.
        let (sum, counts) = match layout {
            Layout::V1 => {
                if let Ok(h) = &header {
                    let expected = head_end
                        .saturating_add(h.records_bytes)
                        .saturating_add(CHECKSUM_LEN as u64);
                    if expected != self.len {
                        return Err(FormatError::WrongLength {
                            expected,
                            found: self.len,
                        });
                    }
                }
                (&self.tail[..], None)
            }
            Layout::V2 => {
                let (end, sum) = self.tail.split_at(layout.end_len() - CHECKSUM_LEN);
                if &end[..END_MAGIC.len()] != END_MAGIC {
                    return Err(FormatError::NoEnd { found: self.len });
                }
                let word = |at: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&end[at..at + 8]);
                    u64::from_le_bytes(w)
                };
                let (records, records_bytes) = (word(END_MAGIC.len()), word(END_MAGIC.len() + 8));
                let expected = head_end
                    .saturating_add(records_bytes)
                    .saturating_add(layout.end_len() as u64);
                if expected != self.len {
                    return Err(FormatError::WrongLength {
                        expected,
                        found: self.len,
                    });
                }
                hasher.update(end);
                (sum, Some((records, records_bytes)))
            }
        };
        let (expected, computed) = (layout.named(sum), layout.named(&hasher.finish()));
        if computed != expected {
            return Err(FormatError::Checksum { expected, computed });
        }
        let mut header = header.map_err(|e| FormatError::Header(e.to_string()))?;
        let (pairs_at, pairs_bytes) = match counts {
            Some((records, records_bytes)) => {
                (header.records, header.records_bytes) = (records, records_bytes);
                (head_end, records_bytes)
            }
            None => {
                let pairs_bytes =
                    header
                        .records_bytes
                        .checked_sub(V1_COUNT_LEN)
                        .ok_or_else(|| {
                            FormatError::Header(format!(
                                "records_bytes {} leaves no room for their count",
                                header.records_bytes
                            ))
                        })?;
                (head_end + V1_COUNT_LEN, pairs_bytes)
            }
        };
        Ok(VerifiedFile {
            header,
            checksum: expected,
            pairs_at,
            pairs_bytes,
            format: match layout {
                Layout::V1 => 1,
                Layout::V2 => 2,
            },
        })
    }
}

/// Why a backup file could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// It is not a usable backup.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// It could not be read.
    #[error("reading the backup: {0}")]
    Io(String),
}

#[cfg(test)]
/// A verified backup in memory: its header and its records' pairs.
#[derive(Debug)]
pub struct Verified<'a> {
    /// Its header, with the counts of its records.
    pub header: BackupHeader,
    /// Its records' pairs (`header.records` of them).
    pub pairs: &'a [u8],
    /// Its checksum, as [`VerifiedFile::checksum`].
    pub checksum: String,
}

/// The layout and the header's length from the start of a file (at least [`PREAMBLE_LEN`]
/// bytes), once its magic and format are checked.
fn preamble(start: &[u8]) -> Result<(Layout, usize), FormatError> {
    if start.len() < PREAMBLE_LEN || &start[..MAGIC.len()] != MAGIC {
        return Err(FormatError::NotABackup);
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&start[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let layout = Layout::of(word(MAGIC.len()))?;
    Ok((layout, word(MAGIC.len() + 4) as usize))
}

#[cfg(test)]
/// Read and check `file`: magic, format, length and checksum, before anything in it is used.
pub fn decode(file: &[u8]) -> Result<Verified<'_>, FormatError> {
    let mut checker = Checker::default();
    checker.update(file)?;
    let v = checker.finish()?;
    let (at, len) = (v.pairs_at as usize, v.pairs_bytes as usize);
    Ok(Verified {
        header: v.header,
        pairs: &file[at..at + len],
        checksum: v.checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pairs: &[u8]) -> BackupHeader {
        BackupHeader {
            cluster_id: "c".into(),
            member_id: 1,
            revision: 42,
            raft_index: 50,
            raft_term: 3,
            records: 2,
            records_bytes: pairs.len() as u64,
            taken_at: "2026-12-06T00:00:00Z".into(),
            written_by: "test".into(),
        }
    }

    fn file_of(pairs: &[u8]) -> Vec<u8> {
        encode(&header(pairs), 2, pairs).expect("encodes")
    }

    /// A file as format 1 wrote it: the count before the pairs, the counts in the header,
    /// SHA-256 last.
    fn format_1(pairs: &[u8]) -> Vec<u8> {
        let mut h = header(pairs);
        h.records_bytes += V1_COUNT_LEN;
        let head = serde_json::to_vec(&h).expect("header");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(pairs);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn a_backup_reads_back_as_written_and_one_of_format_1_still_reads() {
        let pairs = b"some records".to_vec();
        // A format-1 header counts the records' count among their bytes.
        for (file, sum, count_len) in [
            (file_of(&pairs), "blake3:", 0),
            (format_1(&pairs), "sha256:", V1_COUNT_LEN),
        ] {
            let v = decode(&file).expect("decodes");
            let mut says = header(&pairs);
            says.records_bytes += count_len;
            assert_eq!((&v.header, v.pairs), (&says, pairs.as_slice()));
            assert!(v.checksum.starts_with(sum), "{}", v.checksum);
        }
        // The counts are at the end, not in the header.
        let file = file_of(&pairs);
        let head = String::from_utf8_lossy(&file[PREAMBLE_LEN..file.len() - pairs.len() - 56]);
        assert!(!head.contains("records"), "{head}");
    }

    #[test]
    fn truncated_flipped_foreign_and_future_files_are_refused() {
        for file in [file_of(&[7u8; 1000]), format_1(&[7u8; 1000])] {
            for cut in [file.len() - 1, file.len() / 2, 20, 3] {
                let e = decode(&file[..cut]).map(|_| ()).map_err(|e| e.to_string());
                assert!(e.is_err(), "cut at {cut} accepted");
            }
            let e = decode(&file[..file.len() / 2]).unwrap_err().to_string();
            assert!(e.contains("truncated"), "{e}");
            for at in [0, 9, 30, 500, file.len() - 50, file.len() - 1] {
                let mut bad = file.clone();
                bad[at] ^= 0x10;
                let e = decode(&bad).map(|_| ()).map_err(|e| e.to_string());
                assert!(e.is_err(), "flip at {at} accepted");
                if at == 500 {
                    assert!(e.is_err_and(|e| e.contains("checksum")), "flip at {at}");
                }
            }
            let mut longer = file.clone();
            longer.extend_from_slice(b"x");
            let e = decode(&longer).unwrap_err().to_string();
            assert!(e.contains("extra bytes"), "{e}");
        }
        let mut future = file_of(b"x");
        future[8..12].copy_from_slice(&3u32.to_le_bytes());
        let e = decode(&future).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("format 3") && e.contains("[1, 2]"), "{e}");
        let e = decode(b"PK\x03\x04 a zip file").unwrap_err().to_string();
        assert!(e.contains("not a Skiff backup"), "{e}");
    }

    #[test]
    fn pieces_of_any_size_are_checked_as_the_whole_file() {
        for file in [file_of(&[9u8; 300]), format_1(&[9u8; 300])] {
            let mut flipped = file.clone();
            flipped[PREAMBLE_LEN + 3] ^= 1;
            for size in [1, 5, 16, 31, 32, 33, 56, 57, 100, file.len()] {
                let check = |bytes: &[u8]| {
                    let mut c = Checker::default();
                    bytes
                        .chunks(size)
                        .try_for_each(|p| c.update(p))
                        .and_then(|()| c.finish())
                        .map(|v| (v.header, v.checksum, v.pairs_at, v.pairs_bytes))
                        .map_err(|e| e.to_string())
                };
                let whole = decode(&file).map(|v| (v.header, v.checksum));
                let v = check(&file).expect("a good file checks");
                assert_eq!(Ok((v.0, v.1)), whole.map_err(|e| e.to_string()));
                assert_eq!(&file[v.2 as usize..][..v.3 as usize], &[9u8; 300][..]);
                assert!(check(&flipped).is_err(), "pieces of {size}: a flip passed");
                let cut = check(&file[..file.len() - 1]).unwrap_err();
                assert!(cut.contains("truncated"), "pieces of {size}: {cut}");
            }
        }
    }

    #[test]
    fn a_file_is_verified_in_pieces_as_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // More than one piece of the verifier's buffer.
        let pairs = vec![3u8; (1 << 20) + 123];
        let file = file_of(&pairs);
        let path = dir.path().join("b.skiff");
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).expect("write");
            verify_file(&path).map_err(|e| e.to_string())
        };
        let v = check(&file).expect("a good file verifies");
        assert_eq!((v.header, v.format), (header(&pairs), 2));
        assert_eq!(
            v.checksum,
            decode(&file).map(|v| v.checksum).unwrap_or_default()
        );
        assert_eq!(
            &file[v.pairs_at as usize..][..v.pairs_bytes as usize],
            pairs
        );
        let e = check(&file[..file.len() / 2]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let mut bad = file.clone();
        bad[PREAMBLE_LEN + 500_000] ^= 1;
        let e = check(&bad).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        let e = check(b"PK\x03\x04 a zip file").unwrap_err();
        assert!(e.contains("not a Skiff backup"), "{e}");
    }
}
