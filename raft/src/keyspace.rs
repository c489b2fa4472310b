//! Typed key spaces over an [`Engine`].
//!
//! Every stored record lives in one key space: a one-byte prefix, a key type that encodes to
//! bytes that sort as the keys should (big-endian integers), and a value type. Code that reads
//! or writes the store names the space, never a string prefix.

use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::{Engine, EngineError, Result, WriteBatch};

/// A key that can be encoded so that byte order is key order.
pub trait SpaceKey: Sized {
    /// Append the encoded key to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decode from the bytes after the space prefix.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl SpaceKey for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl SpaceKey for u128 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(u128::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl SpaceKey for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl SpaceKey for (u64, u32) {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 12 {
            return None;
        }
        Some((
            u64::decode(&bytes[..8])?,
            u32::from_be_bytes(bytes[8..].try_into().ok()?),
        ))
    }
}

impl SpaceKey for (u64, u128) {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 24 {
            return None;
        }
        Some((u64::decode(&bytes[..8])?, u128::decode(&bytes[8..])?))
    }
}

/// A named region of the engine's key space.
pub trait KeySpace {
    /// Name used in errors.
    const NAME: &'static str;
    /// The prefix byte that separates this space from the others.
    const PREFIX: u8;
    /// The key type.
    type Key: SpaceKey;
    /// The value type, stored with bincode.
    type Value: Serialize + DeserializeOwned;

    /// The full engine key for `key`.
    fn raw_key(key: &Self::Key) -> Vec<u8> {
        let mut out = vec![Self::PREFIX];
        key.encode(&mut out);
        out
    }
}

fn decode_value<KS: KeySpace>(bytes: &[u8]) -> Result<KS::Value> {
    bincode::deserialize(bytes).map_err(|source| EngineError::Decode {
        space: KS::NAME,
        source,
    })
}

fn encode_value<KS: KeySpace>(value: &KS::Value) -> Vec<u8> {
    // Serialising our own plain data types into a Vec cannot fail.
    bincode::serialize(value).expect("bincode serialisation of an in-memory value")
}

fn decode_key<KS: KeySpace>(raw: &[u8]) -> Result<KS::Key> {
    raw.get(1..)
        .and_then(KS::Key::decode)
        .ok_or(EngineError::BadKey { space: KS::NAME })
}

fn map_bound<KS: KeySpace>(b: Bound<&KS::Key>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(KS::raw_key(k)),
        Bound::Excluded(k) => Bound::Excluded(KS::raw_key(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn space_bounds<KS: KeySpace>(
    start: Bound<&KS::Key>,
    end: Bound<&KS::Key>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match map_bound::<KS>(start) {
        Bound::Unbounded => Bound::Included(vec![KS::PREFIX]),
        b => b,
    };
    let end = match map_bound::<KS>(end) {
        Bound::Unbounded => Bound::Excluded(vec![KS::PREFIX + 1]),
        b => b,
    };
    (start, end)
}

/// Typed reads over an engine.
pub trait TypedRead {
    /// Read one value of space `KS`.
    fn get_in<KS: KeySpace>(&self, key: &KS::Key) -> Result<Option<KS::Value>>;
    /// Read keys of `KS` in range, at most `limit` (`0` = all).
    fn scan_in<KS: KeySpace>(
        &self,
        start: Bound<&KS::Key>,
        end: Bound<&KS::Key>,
        limit: usize,
    ) -> Result<Vec<(KS::Key, KS::Value)>>;
    /// Keys of `KS` whose encoded key starts with `prefix` (bytes after the space prefix).
    fn scan_prefix_in<KS: KeySpace>(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(KS::Key, KS::Value)>>;
    /// The greatest entry of `KS` in range.
    fn last_in<KS: KeySpace>(
        &self,
        start: Bound<&KS::Key>,
        end: Bound<&KS::Key>,
    ) -> Result<Option<(KS::Key, KS::Value)>>;
}

fn decode_pairs<KS: KeySpace>(raw: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(KS::Key, KS::Value)>> {
    raw.into_iter()
        .map(|(k, v)| Ok((decode_key::<KS>(&k)?, decode_value::<KS>(&v)?)))
        .collect()
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is none.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl<E: Engine + ?Sized> TypedRead for E {
    fn get_in<KS: KeySpace>(&self, key: &KS::Key) -> Result<Option<KS::Value>> {
        self.get(&KS::raw_key(key))?
            .map(|v| decode_value::<KS>(&v))
            .transpose()
    }

    fn scan_in<KS: KeySpace>(
        &self,
        start: Bound<&KS::Key>,
        end: Bound<&KS::Key>,
        limit: usize,
    ) -> Result<Vec<(KS::Key, KS::Value)>> {
        let (s, e) = space_bounds::<KS>(start, end);
        decode_pairs::<KS>(self.scan(s, e, limit)?)
    }

    fn scan_prefix_in<KS: KeySpace>(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(KS::Key, KS::Value)>> {
        let mut start = vec![KS::PREFIX];
        start.extend_from_slice(prefix);
        let end = match prefix_end(&start) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        decode_pairs::<KS>(self.scan(Bound::Included(start), end, limit)?)
    }

    fn last_in<KS: KeySpace>(
        &self,
        start: Bound<&KS::Key>,
        end: Bound<&KS::Key>,
    ) -> Result<Option<(KS::Key, KS::Value)>> {
        let (s, e) = space_bounds::<KS>(start, end);
        match self.last(s, e)? {
            Some((k, v)) => Ok(Some((decode_key::<KS>(&k)?, decode_value::<KS>(&v)?))),
            None => Ok(None),
        }
    }
}

impl WriteBatch {
    /// Queue a typed put.
    pub fn put<KS: KeySpace>(&mut self, key: &KS::Key, value: &KS::Value) {
        self.put_raw(KS::raw_key(key), encode_value::<KS>(value));
    }
    /// Queue a typed delete.
    pub fn delete<KS: KeySpace>(&mut self, key: &KS::Key) {
        self.delete_raw(KS::raw_key(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn u64_keys_sort_numerically() {
        let mut a = vec![];
        2u64.encode(&mut a);
        let mut b = vec![];
        256u64.encode(&mut b);
        assert!(a < b);
    }
}
