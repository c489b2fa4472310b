//! Secrets encrypted at rest, as Kubernetes' envelope encryption does: each Secret's stored
//! value is AES-256-GCM ciphertext under a data key of the cluster; the data keys live in the
//! store (so every member, and every snapshot, has them) wrapped by the key in
//! `--encryption-key-file`, which lives outside the data directory. The log, the state, the
//! snapshots and whatever is streamed to a new member hold ciphertext only. Rotation makes a
//! new data key, re-encrypts every Secret under it online and deletes the old keys.
//!
//! The key file holds one key per line: the first wraps new data keys, every line may unwrap
//! them (as the providers of Kubernetes' EncryptionConfiguration). It is read again when a
//! data key opens with none of the keys held and at each rotation, so a new key put first on
//! every member, then a rotation, leaves nothing in the store that the old key opens, without
//! a restart.
//!
//! Stored form: `skiff:enc:aesgcm:v1:` + key id (4 bytes, big-endian) + nonce (12) + sealed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use rand::RngCore as _;
use skiff_raft::mvcc::{Compare, Op, Txn};
use skiff_raft::{RaftNode, Write};

use super::error::{ObjectError, Result};

const PREFIX: &[u8] = b"skiff:enc:aesgcm:v1:";
/// Where the wrapped data keys are kept (inside the reserved object key space, so the raw kv
/// API cannot touch them).
const KEYS: &str = "/registry/encryption/keys/";
/// The id of the data key new writes use.
const CURRENT: &str = "/registry/encryption/current";
const NONCE: usize = 12;

/// Why the encryption key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Not readable.
    #[error("--encryption-key-file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not 32 bytes in base64, or there is no line.
    #[error("--encryption-key-file {path}: {what} is not a key: each line holds 32 random bytes in base64 (head -c 32 /dev/urandom | base64), the first wrapping new data keys")]
    Malformed {
        /// The file.
        path: String,
        /// Which line, or that there is none.
        what: String,
    },
}

/// The keys of a key file, first the one that wraps new data keys.
fn read_key_file(path: &Path) -> std::result::Result<Vec<Aes256Gcm>, KeyFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(line)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| KeyFileError::Malformed {
                path: shown.clone(),
                what: format!("line {}", n + 1),
            })?;
        keys.push(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)));
    }
    if keys.is_empty() {
        return Err(KeyFileError::Malformed {
            path: shown,
            what: "an empty file".into(),
        });
    }
    Ok(keys)
}

/// A new key file's content: 32 random bytes in base64.
pub fn new_key_file_content() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Seals and opens Secrets' stored values.
pub struct Sealer {
    key_file: PathBuf,
    keks: RwLock<Vec<Aes256Gcm>>,
    node: RaftNode,
    deks: Mutex<HashMap<u32, Aes256Gcm>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

fn corrupt(what: &str, reason: impl std::fmt::Display) -> ObjectError {
    ObjectError::Corrupt {
        key: what.to_string(),
        reason: reason.to_string(),
    }
}

fn seal_with(cipher: &Aes256Gcm, plain: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE];
    rand::thread_rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), plain)
        .map_err(|e| corrupt("encryption", e))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

fn open_with(cipher: &Aes256Gcm, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE);
    cipher.decrypt(Nonce::from_slice(nonce), body).ok()
}

/// Whether a stored value is sealed.
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(PREFIX)
}

impl Sealer {
    /// A sealer for `node`'s store with the key in `path`.
    pub fn from_key_file(path: &Path, node: RaftNode) -> std::result::Result<Self, KeyFileError> {
        Ok(Self {
            keks: RwLock::new(read_key_file(path)?),
            key_file: path.to_path_buf(),
            node,
            deks: Mutex::default(),
        })
    }

    /// Read the key file again; a file that no longer reads keeps the keys held.
    fn reload_key_file(&self) -> Result<()> {
        let keys = read_key_file(&self.key_file).map_err(|e| corrupt("encryption", e))?;
        *self.keks.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    /// A data key wrapped by the key file's first key.
    fn wrap(&self, raw: &[u8]) -> Result<Vec<u8>> {
        let keks = self.keks.read().unwrap_or_else(|p| p.into_inner());
        let first = keks
            .first()
            .ok_or_else(|| corrupt("encryption", "no key in --encryption-key-file"))?;
        seal_with(first, raw)
    }

    /// A wrapped data key opened with whichever key of the file opens it.
    fn unwrap_with_held(&self, wrapped: &[u8]) -> Option<Vec<u8>> {
        let keks = self.keks.read().unwrap_or_else(|p| p.into_inner());
        keks.iter().find_map(|k| open_with(k, wrapped))
    }

    fn read(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>> {
        let r = self
            .node
            .state()
            .range(key.as_bytes(), false, None, 0)
            .map_err(|e| ObjectError::Store(e.into()))?;
        Ok(r.kvs
            .into_iter()
            .next()
            .map(|kv| (kv.value, kv.mod_revision)))
    }

    /// The data key `id`, unwrapped (and remembered).
    fn dek(&self, id: u32) -> Result<Aes256Gcm> {
        if let Some(k) = self.deks.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(k.clone());
        }
        let (wrapped, _) = self
            .read(&format!("{KEYS}{id:08}"))?
            .ok_or_else(|| corrupt("encryption", format!("data key {id} is not in the store")))?;
        // A key added to the file since it was read may be the one.
        let raw = match self.unwrap_with_held(&wrapped) {
            Some(raw) => raw,
            None => {
                self.reload_key_file()?;
                self.unwrap_with_held(&wrapped).ok_or_else(|| {
                    corrupt(
                        "encryption",
                        format!(
                            "data key {id} opens with no key of this member's --encryption-key-file"
                        ),
                    )
                })?
            }
        };
        let k = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&raw));
        self.deks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, k.clone());
        Ok(k)
    }

    /// The current data key's id and the revision `CURRENT` was written at.
    fn current(&self) -> Result<Option<(u32, u64)>> {
        Ok(self.read(CURRENT)?.and_then(|(v, rev)| {
            std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(|id| (id, rev))
        }))
    }

    /// Make data key `id` current (if `CURRENT` is still at `expected` revision, 0: absent).
    async fn install(&self, id: u32, expected: u64) -> Result<bool> {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let txn = Txn {
            compares: vec![
                Compare::ModRevision {
                    key: CURRENT.as_bytes().to_vec(),
                    revision: expected,
                },
                Compare::Absent {
                    key: format!("{KEYS}{id:08}").into_bytes(),
                },
            ],
            success: vec![
                Op::PutNoPrev {
                    key: format!("{KEYS}{id:08}").into_bytes(),
                    value: self.wrap(&raw)?,
                },
                Op::PutNoPrev {
                    key: CURRENT.as_bytes().to_vec(),
                    value: id.to_string().into_bytes(),
                },
            ],
            failure: vec![],
        };
        let r = self
            .node
            .propose(Write {
                request_id: rand::random(),
                txn,
            })
            .await?;
        Ok(r.succeeded)
    }

    /// Seal `plain` under the current data key, making the first one if there is none.
    pub async fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let (id, dek) = loop {
            match self.current()? {
                Some((id, _)) => match self.dek(id) {
                    Ok(k) => break (id, k),
                    // Made by another member a moment ago: catch up with the leader first.
                    Err(_) => {
                        self.node.linearizable_read().await?;
                        break (id, self.dek(id)?);
                    }
                },
                None => {
                    self.install(1, 0).await?;
                    self.node.linearizable_read().await?;
                }
            }
        };
        let mut out = PREFIX.to_vec();
        out.extend(id.to_be_bytes());
        out.extend(seal_with(&dek, plain)?);
        Ok(out)
    }

    /// The plain form of a stored value (values not sealed pass as they are).
    pub fn open(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_vec());
        };
        let shown = || String::from_utf8_lossy(key).into_owned();
        if rest.len() < 4 {
            return Err(corrupt(&shown(), "a sealed value without its key id"));
        }
        let (id, sealed) = rest.split_at(4);
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        open_with(&self.dek(id)?, sealed)
            .ok_or_else(|| corrupt(&shown(), format!("does not open with data key {id}")))
    }

    /// A new data key, wrapped by the key file's first key as it reads now, made current; the
    /// Secrets are then sealed again under it by the store
    /// ([`super::ObjectStore::rotate_secrets_key`]) and the old keys deleted.
    pub async fn new_key(&self) -> Result<u32> {
        self.reload_key_file()?;
        loop {
            let (next, expected) = match self.current()? {
                Some((id, rev)) => (id + 1, rev),
                None => (1, 0),
            };
            let made = self.install(next, expected).await?;
            self.node.linearizable_read().await?;
            if made {
                return Ok(next);
            }
        }
    }

    /// Delete every data key but `keep`.
    pub async fn delete_keys_but(&self, keep: u32) -> Result<usize> {
        let r = self
            .node
            .state()
            .range(KEYS.as_bytes(), true, None, 0)
            .map_err(|e| ObjectError::Store(e.into()))?;
        let keep_key = format!("{KEYS}{keep:08}").into_bytes();
        let old: Vec<Op> = r
            .kvs
            .into_iter()
            .filter(|kv| kv.key != keep_key)
            .map(|kv| Op::Delete { key: kv.key })
            .collect();
        let n = old.len();
        if n > 0 {
            self.node
                .propose(Write {
                    request_id: rand::random(),
                    txn: Txn {
                        compares: vec![],
                        success: old,
                        failure: vec![],
                    },
                })
                .await?;
        }
        self.deks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| *id == keep);
        Ok(n)
    }

    /// Whether `value` is sealed under data key `id`.
    pub fn sealed_under(value: &[u8], id: u32) -> bool {
        value
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.len() >= 4 && rest[..4] == id.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn a_key_file_holds_keys_one_per_line_and_bad_lines_are_named() {
        let (a, b) = (new_key_file_content(), new_key_file_content());
        let (_d, two) = file(&format!("{a}\n\n{b}\n"));
        let keys = read_key_file(&two).expect("two keys");
        assert_eq!(keys.len(), 2);
        let wrapped = seal_with(&keys[1], b"data key").expect("seal");
        assert!(open_with(&keys[0], &wrapped).is_none());
        assert_eq!(
            open_with(&keys[1], &wrapped).as_deref(),
            Some(&b"data key"[..])
        );

        let (_d, bad) = file(&format!("{a}\nnot-a-key\n"));
        let e = read_key_file(&bad).err().expect("a bad line").to_string();
        assert!(e.contains("line 2 is not a key"), "{e}");
        let (_d, empty) = file("\n");
        let e = read_key_file(&empty).err().expect("no key").to_string();
        assert!(e.contains("an empty file"), "{e}");
    }
}
