//! How a value is laid out in sled: small values inline, large ones in pieces.
//!
//! sled rewrites a leaf node whole (up to ~19 entries) and writes a node larger than a quarter
//! of a segment as a blob file of its own, which it never fsyncs; a power cut can then leave
//! the data file pointing at a blob that holds nothing, and sled's recovery skips such a write
//! (and what else the node held). No fsync from outside closes that window while other writes
//! run, so nodes never grow that large: a value above [`PIECE`] bytes is stored as pieces of at
//! most [`PIECE`] bytes under keys of their own, and its key holds a head naming them. ~19
//! entries of a piece and a key each stay well under the 2 MiB threshold of 8 MiB segments.
//!
//! Every stored value starts with a tag byte: [`INLINE`] then the value, or [`IN_PIECES`] then
//! the pieces' generation and the value's length. Keys from `0xfc` up are the engine's own: a
//! marker per value in pieces (so the engine knows them without reading values), the pieces,
//! the intent of a change under way, and the redo record.

/// The largest value stored inline, and the size of every piece but the last.
pub(super) const PIECE: usize = 64 << 10;

/// Keys at or above this byte are the engine's own, never a caller's.
pub(super) const FIRST_INTERNAL: u8 = 0xfc;
/// `MARKER ++ key`: present while `key`'s value is in pieces.
const MARKER: u8 = 0xfc;
/// `PIECES ++ len(key) ++ key ++ generation ++ index`: one piece.
const PIECES: u8 = 0xfd;
/// `INTENT ++ key`: a change of `key` to or from pieces, present until it is whole.
const INTENT: u8 = 0xfe;

/// The largest value the engine keeps: far above any message it is given (16 MiB), it bounds
/// what a damaged head can make a reader or writer walk through.
pub(super) const MAX_VALUE: u64 = 1 << 30;

const INLINE: u8 = 0;
const IN_PIECES: u8 = 1;
const HEAD_LEN: usize = 1 + 8 + 8;

/// Where a value in pieces is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    /// Unique in the store (sled's id generator): pieces once written are never rewritten, so
    /// a reader that finds them all has read one value.
    pub gen: u64,
    /// The whole value's length.
    pub len: u64,
}

impl Head {
    /// How many pieces; `len` is within (`PIECE`, [`MAX_VALUE`]] for any head written or
    /// decoded.
    pub fn count(&self) -> u32 {
        self.len.div_ceil(PIECE as u64) as u32
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_LEN);
        out.push(IN_PIECES);
        out.extend_from_slice(&self.gen.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out
    }
}

/// A stored value, read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stored<'a> {
    Inline(&'a [u8]),
    InPieces(Head),
}

/// Why a stored value cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    /// The tag byte is not one this build writes.
    #[error("unknown value tag {0}")]
    UnknownTag(u8),
    /// The value is empty, or a head is cut short.
    #[error("a stored value is cut short")]
    Short,
    /// A head names a length that is not one of a value in pieces.
    #[error("a value in pieces of {0} bytes")]
    HeadLength(u64),
    /// A piece the head names is missing or has the wrong length.
    #[error("piece {index} of a value in {count} pieces is missing or the wrong length")]
    Piece {
        /// The piece's index.
        index: u32,
        /// How many the head names.
        count: u32,
    },
}

/// The value as stored inline: its tag, then its bytes.
pub(super) fn inline(value: &[u8]) -> Vec<u8> {
    prefixed(INLINE, value)
}

/// `byte ++ bytes`.
fn prefixed(byte: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(byte);
    out.extend_from_slice(bytes);
    out
}

pub(super) fn decode(stored: &[u8]) -> Result<Stored<'_>, BadValue> {
    match stored.split_first() {
        Some((&INLINE, value)) => Ok(Stored::Inline(value)),
        Some((&IN_PIECES, rest)) => {
            let (gen, rest) = rest.split_first_chunk::<8>().ok_or(BadValue::Short)?;
            let (len, _) = rest.split_first_chunk::<8>().ok_or(BadValue::Short)?;
            let len = u64::from_be_bytes(*len);
            if len <= PIECE as u64 || len > MAX_VALUE {
                return Err(BadValue::HeadLength(len));
            }
            Ok(Stored::InPieces(Head {
                gen: u64::from_be_bytes(*gen),
                len,
            }))
        }
        Some((&tag, _)) => Err(BadValue::UnknownTag(tag)),
        None => Err(BadValue::Short),
    }
}

pub(super) fn marker_key(key: &[u8]) -> Vec<u8> {
    prefixed(MARKER, key)
}

/// The marker space: every key whose value is in pieces, behind [`MARKER`].
pub(super) fn marker_range() -> std::ops::Range<Vec<u8>> {
    vec![MARKER]..vec![MARKER + 1]
}

/// The key a marker or an intent stands for.
pub(super) fn key_behind(internal: &[u8]) -> &[u8] {
    &internal[1..]
}

/// The key of piece `index`; the key's length goes first so that no key's pieces fall among
/// another's.
pub(super) fn piece_key(key: &[u8], gen: u64, index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + key.len() + 8 + 4);
    out.push(PIECES);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&gen.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// A change of a key's value to or from pieces, recorded before it starts: the head it writes
/// (`None`: the value goes inline or away) and the head it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Intent {
    pub new: Option<Head>,
    pub old: Option<Head>,
}

impl Intent {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 * HEAD_LEN);
        for head in [self.new, self.old] {
            match head {
                Some(h) => out.extend_from_slice(&h.encode()),
                None => out.push(INLINE),
            }
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, BadValue> {
        let mut one = || -> Result<Option<Head>, BadValue> {
            match bytes.first() {
                Some(&INLINE) => {
                    bytes = &bytes[1..];
                    Ok(None)
                }
                _ => {
                    let head = match decode(bytes.get(..HEAD_LEN).ok_or(BadValue::Short)?)? {
                        Stored::InPieces(head) => head,
                        Stored::Inline(_) => return Err(BadValue::Short),
                    };
                    bytes = &bytes[HEAD_LEN..];
                    Ok(Some(head))
                }
            }
        };
        Ok(Self {
            new: one()?,
            old: one()?,
        })
    }
}

pub(super) fn intent_key(key: &[u8]) -> Vec<u8> {
    prefixed(INTENT, key)
}

/// The intent space, behind [`INTENT`].
pub(super) fn intent_range() -> std::ops::Range<Vec<u8>> {
    vec![INTENT]..vec![INTENT + 1]
}

/// The pieces of `value`, with their indexes.
pub(super) fn split(value: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    value
        .chunks(PIECE)
        .enumerate()
        .map(|(i, piece)| (i as u32, piece))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_written() {
        assert_eq!(decode(&inline(b"abc")), Ok(Stored::Inline(&b"abc"[..])));
        assert_eq!(decode(&inline(b"")), Ok(Stored::Inline(&b""[..])));
        let head = Head {
            gen: 7,
            len: 3 * PIECE as u64 + 1,
        };
        assert_eq!(decode(&head.encode()), Ok(Stored::InPieces(head)));
        assert_eq!(head.count(), 4);
        assert_eq!(decode(&[9, 1]), Err(BadValue::UnknownTag(9)));
        assert_eq!(decode(&[]), Err(BadValue::Short));
        assert_eq!(decode(&head.encode()[..10]), Err(BadValue::Short));
        let too_long = Head {
            gen: 1,
            len: MAX_VALUE + 1,
        };
        assert_eq!(
            decode(&too_long.encode()),
            Err(BadValue::HeadLength(MAX_VALUE + 1))
        );
        let small = Head { gen: 1, len: 5 };
        assert_eq!(decode(&small.encode()), Err(BadValue::HeadLength(5)));
        for intent in [
            Intent {
                new: Some(head),
                old: None,
            },
            Intent {
                new: None,
                old: Some(head),
            },
            Intent {
                new: Some(head),
                old: Some(Head { gen: 9, ..head }),
            },
        ] {
            assert_eq!(Intent::decode(&intent.encode()), Ok(intent));
        }
        assert_eq!(Intent::decode(&[INLINE]), Err(BadValue::Short));
    }

    #[test]
    fn pieces_of_one_key_sort_together_and_in_order() {
        let a = piece_key(b"a", 1, 0);
        let a_last = piece_key(b"a", 1, 9);
        let ab = piece_key(b"ab", 0, 0);
        assert!(
            a < a_last && a_last < ab,
            "keys of different lengths do not interleave"
        );
        assert!(piece_key(b"a", 1, 255) < piece_key(b"a", 1, 256));
        let sizes: Vec<usize> = split(&vec![0; 2 * PIECE + 5])
            .map(|(_, p)| p.len())
            .collect();
        assert_eq!(sizes, vec![PIECE, PIECE, 5]);
        assert!(marker_key(b"k")[0] >= FIRST_INTERNAL && a[0] >= FIRST_INTERNAL);
        assert!(intent_key(b"k")[0] >= FIRST_INTERNAL);
    }
}
