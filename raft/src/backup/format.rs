//! The backup file: a versioned header, the store's records, and a checksum of everything
//! before it.
//!
//! ```text
//!  "SKIFFBAK" │ format u32 LE │ header length u32 LE │ header (JSON) │ records │ SHA-256
//! ```
//!
//! The records are the state machine's, serialised as a Raft snapshot's body is (so a restore
//! installs them as one). The checksum covers the header too: a flipped bit anywhere, or a
//! file cut short, is refused before anything is written.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"SKIFFBAK";
/// The format this build writes and reads.
pub const FORMAT: u32 = 1;
const CHECKSUM_LEN: usize = 32;
const PREAMBLE_LEN: usize = MAGIC.len() + 4 + 4;

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
    /// How many records it holds.
    pub records: u64,
    /// The bytes of the records.
    pub records_bytes: u64,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// The version of Skiff that wrote it.
    pub written_by: String,
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
    #[error("backup format {found} is not one this build reads (it reads format {supported})")]
    UnsupportedFormat {
        /// The file's format.
        found: u32,
        /// This build's.
        supported: u32,
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

/// The whole file for `header` and `records`.
pub fn encode(header: &BackupHeader, records: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = encode_head(header)?;
    out.reserve(records.len() + CHECKSUM_LEN);
    out.extend_from_slice(records);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// The start of the file for `header`: magic, format, the header's length, the header. The
/// records follow, then the SHA-256 of everything before it.
pub fn encode_head(header: &BackupHeader) -> Result<Vec<u8>, FormatError> {
    let head = serde_json::to_vec(header).map_err(|e| FormatError::Header(e.to_string()))?;
    let head_len = u32::try_from(head.len()).map_err(|e| FormatError::Header(e.to_string()))?;
    let mut out = Vec::with_capacity(PREAMBLE_LEN + head.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&head_len.to_le_bytes());
    out.extend_from_slice(&head);
    Ok(out)
}

/// A backup file checked whole.
#[derive(Debug, Clone)]
pub struct VerifiedFile {
    /// Its header.
    pub header: BackupHeader,
    /// Its SHA-256, hex.
    pub checksum: String,
    /// Where its records start in the file (they are `header.records_bytes` long).
    pub records_at: u64,
}

/// Check the backup file at `path` as [`decode`] checks one in memory (magic, format, length,
/// checksum), reading it in pieces: memory does not grow with its size.
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

/// Checks a backup as its bytes go by (received, or read from disk), as [`decode`] checks one
/// whole: memory holds the header and the last [`CHECKSUM_LEN`] bytes seen, not the file.
#[derive(Default)]
pub struct Checker {
    /// The file's start until its header is complete.
    start: Vec<u8>,
    /// Where the header ends, once the preamble is read.
    head_end: Option<usize>,
    hasher: Sha256,
    /// The last bytes seen, not hashed yet: the checksum, if the file ends here.
    tail: Vec<u8>,
    len: u64,
}

impl Checker {
    /// The next bytes of the file. Refuses at once what is not a backup of this format.
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), FormatError> {
        self.len += bytes.len() as u64;
        // The preamble, then the header: kept (the header is read at the end) and hashed.
        while !bytes.is_empty() {
            let want = self.head_end.unwrap_or(PREAMBLE_LEN);
            if self.start.len() >= want {
                break;
            }
            let take = bytes.len().min(want - self.start.len());
            self.start.extend_from_slice(&bytes[..take]);
            self.hasher.update(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head_end.is_none() && self.start.len() == PREAMBLE_LEN {
                let head_len = header_len(&self.start)?;
                if head_len > MAX_HEADER_LEN {
                    return Err(FormatError::Header(format!(
                        "{head_len} bytes long; no backup's header is over {MAX_HEADER_LEN}"
                    )));
                }
                self.head_end = Some(PREAMBLE_LEN + head_len);
            }
        }
        // Then all but the last CHECKSUM_LEN bytes seen are hashed: those may be the checksum.
        let seen = self.tail.len() + bytes.len();
        if seen <= CHECKSUM_LEN {
            self.tail.extend_from_slice(bytes);
            return Ok(());
        }
        let hash = seen - CHECKSUM_LEN;
        let from_tail = hash.min(self.tail.len());
        self.hasher.update(&self.tail[..from_tail]);
        self.hasher.update(&bytes[..hash - from_tail]);
        self.tail.drain(..from_tail);
        self.tail.extend_from_slice(&bytes[hash - from_tail..]);
        Ok(())
    }

    /// The whole file has been seen: its length against its header, then its checksum.
    pub fn finish(self) -> Result<VerifiedFile, FormatError> {
        let Some(head_end) = self.head_end else {
            return Err(FormatError::NotABackup);
        };
        let head_end = head_end as u64;
        if self.len < head_end + CHECKSUM_LEN as u64 {
            return Err(FormatError::WrongLength {
                expected: head_end + CHECKSUM_LEN as u64,
                found: self.len,
            });
        }
        // The length first, from the header if it reads: a file cut short says so. Then the
        // checksum, before anything the header says is trusted.
        let header = serde_json::from_slice::<BackupHeader>(&self.start[PREAMBLE_LEN..]);
        if let Ok(h) = &header {
            let expected = head_end + h.records_bytes + CHECKSUM_LEN as u64;
            if expected != self.len {
                return Err(FormatError::WrongLength {
                    expected,
                    found: self.len,
                });
            }
        }
        let computed = self.hasher.finalize();
        if computed.as_slice() != self.tail.as_slice() {
            return Err(FormatError::Checksum {
                expected: hex(&self.tail),
                computed: hex(&computed),
            });
        }
        let header = header.map_err(|e| FormatError::Header(e.to_string()))?;
        Ok(VerifiedFile {
            header,
            checksum: hex(&self.tail),
            records_at: head_end,
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

/// A verified backup: its header and its records.
#[derive(Debug)]
pub struct Verified<'a> {
    /// Its header.
    pub header: BackupHeader,
    /// Its records, as a Raft snapshot's body.
    pub records: &'a [u8],
    /// Its SHA-256, hex.
    pub checksum: String,
}

/// The header's length from the start of a file (at least [`PREAMBLE_LEN`] bytes), once its
/// magic and format are checked.
fn header_len(start: &[u8]) -> Result<usize, FormatError> {
    if start.len() < PREAMBLE_LEN || &start[..MAGIC.len()] != MAGIC {
        return Err(FormatError::NotABackup);
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&start[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let format = word(MAGIC.len());
    if format != FORMAT {
        return Err(FormatError::UnsupportedFormat {
            found: format,
            supported: FORMAT,
        });
    }
    Ok(word(MAGIC.len() + 4) as usize)
}

/// Read and check `file`: magic, format, length and checksum, before anything in it is used.
pub fn decode(file: &[u8]) -> Result<Verified<'_>, FormatError> {
    let mut checker = Checker::default();
    checker.update(file)?;
    let v = checker.finish()?;
    Ok(Verified {
        header: v.header,
        records: &file[v.records_at as usize..file.len() - CHECKSUM_LEN],
        checksum: v.checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(records: &[u8]) -> BackupHeader {
        BackupHeader {
            cluster_id: "c".into(),
            member_id: 1,
            revision: 42,
            raft_index: 50,
            raft_term: 3,
            records: 2,
            records_bytes: records.len() as u64,
            taken_at: "2026-12-06T00:00:00Z".into(),
            written_by: "test".into(),
        }
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        let records = b"some records".to_vec();
        let file = encode(&header(&records), &records).unwrap_or_default();
        let v = decode(&file).map_err(|e| e.to_string());
        let v = v.as_ref().map(|v| (&v.header, v.records));
        assert_eq!(v, Ok((&header(&records), records.as_slice())));
    }

    #[test]
    fn truncated_flipped_foreign_and_future_files_are_refused() {
        let records = vec![7u8; 1000];
        let file = encode(&header(&records), &records).unwrap_or_default();
        for cut in [file.len() - 1, file.len() / 2, 20, 3] {
            let e = decode(&file[..cut]).map(|_| ()).map_err(|e| e.to_string());
            assert!(e.is_err(), "cut at {cut} accepted");
        }
        let e = decode(&file[..file.len() / 2]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        for at in [0, 9, 30, 500, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            let e = decode(&bad).map(|_| ()).map_err(|e| e.to_string());
            assert!(e.is_err(), "flip at {at} accepted");
            if at >= 500 {
                assert!(e.is_err_and(|e| e.contains("checksum")), "flip at {at}");
            }
        }
        let mut future = file.clone();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        let e = decode(&future).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("format 2") && e.contains("format 1"), "{e}");
        let e = decode(b"PK\x03\x04 a zip file").unwrap_err().to_string();
        assert!(e.contains("not a Skiff backup"), "{e}");
        let mut longer = file.clone();
        longer.extend_from_slice(b"x");
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn pieces_of_any_size_are_checked_as_the_whole_file() {
        let records = vec![9u8; 300];
        let file = encode(&header(&records), &records).unwrap_or_default();
        let mut flipped = file.clone();
        flipped[PREAMBLE_LEN + 3] ^= 1;
        for size in [1, 5, 16, 31, 32, 33, 100, file.len()] {
            let check = |bytes: &[u8]| {
                let mut c = Checker::default();
                bytes
                    .chunks(size)
                    .try_for_each(|p| c.update(p))
                    .and_then(|()| c.finish())
                    .map(|v| (v.header, v.checksum, v.records_at))
                    .map_err(|e| e.to_string())
            };
            let whole = decode(&file).map(|v| (v.header, v.checksum));
            let v = check(&file).expect("a good file checks");
            assert_eq!(Ok((v.0, v.1)), whole.map_err(|e| e.to_string()));
            assert_eq!(v.2 as usize, file.len() - CHECKSUM_LEN - records.len());
            assert!(check(&flipped).is_err(), "pieces of {size}: a flip passed");
            let cut = check(&file[..file.len() - 1]).unwrap_err();
            assert!(cut.contains("truncated"), "pieces of {size}: {cut}");
        }
    }

    #[test]
    fn a_file_is_verified_in_pieces_as_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // More than one piece of the verifier's buffer.
        let records = vec![3u8; (1 << 20) + 123];
        let file = encode(&header(&records), &records).unwrap_or_default();
        let path = dir.path().join("b.skiff");
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).expect("write");
            verify_file(&path).map_err(|e| e.to_string())
        };
        let v = check(&file).expect("a good file verifies");
        assert_eq!(v.header, header(&records));
        assert_eq!(
            v.checksum,
            decode(&file).map(|v| v.checksum).unwrap_or_default()
        );
        assert_eq!(
            v.records_at as usize,
            file.len() - CHECKSUM_LEN - records.len()
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
