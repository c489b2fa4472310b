//! The FUSE side: a passthrough of a backing directory whose file data stays in memory
//! ([`Dirty`]) until the file is fsynced. Metadata (create, rename, unlink, mkdir, chmod) goes
//! to the backing directory at once: the model is a disk that journals metadata and loses
//! unsynced data, as LazyFS does by default.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use super::pages::Dirty;

/// Nothing is cached by the kernel: after a cut the next look must come here.
const TTL: Duration = Duration::ZERO;

/// The filesystem's state, shared with the suite (which cuts the power).
#[derive(Debug)]
pub struct State {
    backing: PathBuf,
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, File>,
    dirty: HashMap<u64, Dirty>,
}

impl State {
    pub(super) fn new(backing: PathBuf) -> Self {
        let mut s = Self {
            backing,
            paths: HashMap::new(),
            inos: HashMap::new(),
            next_ino: fuser::FUSE_ROOT_ID + 1,
            files: HashMap::new(),
            dirty: HashMap::new(),
        };
        s.paths.insert(fuser::FUSE_ROOT_ID, PathBuf::new());
        s.inos.insert(PathBuf::new(), fuser::FUSE_ROOT_ID);
        s
    }

    /// The power cut: every unsynced byte is gone. Returns how many files lost data.
    pub(super) fn cut(&mut self) -> usize {
        let lost = self.dirty.values().filter(|d| !d.is_clean()).count();
        self.dirty.clear();
        self.files.clear();
        lost
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn intern(&mut self, rel: PathBuf) -> u64 {
        if let Some(i) = self.inos.get(&rel) {
            return *i;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(ino, rel.clone());
        self.inos.insert(rel, ino);
        ino
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inos.remove(rel) {
            self.paths.remove(&ino);
            self.files.remove(&ino);
            self.dirty.remove(&ino);
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, i32> {
        self.paths
            .get(&parent)
            .map(|p| p.join(name))
            .ok_or(libc::ENOENT)
    }

    fn file(&mut self, ino: u64) -> Result<&File, i32> {
        if !self.files.contains_key(&ino) {
            let rel = self.paths.get(&ino).ok_or(libc::ENOENT)?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.full(rel))
                .map_err(errno)?;
            self.files.insert(ino, f);
        }
        self.files.get(&ino).ok_or(libc::ENOENT)
    }

    fn attr(&mut self, ino: u64) -> Result<FileAttr, i32> {
        let rel = self.paths.get(&ino).ok_or(libc::ENOENT)?.clone();
        let meta = std::fs::symlink_metadata(self.full(&rel)).map_err(errno)?;
        let mut size = meta.len();
        if meta.is_file() && self.dirty.contains_key(&ino) {
            let f = self.file(ino)?.try_clone().map_err(errno)?;
            if let Some(d) = self.dirty.get(&ino) {
                size = d.size(&f).map_err(errno)?;
            }
        }
        Ok(to_attr(ino, &meta, size))
    }
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn to_attr(ino: u64, m: &Metadata, size: u64) -> FileAttr {
    let kind = if m.is_dir() {
        FileType::Directory
    } else if m.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    let time = |s: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0));
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: time(m.atime()),
        mtime: time(m.mtime()),
        ctime: time(m.ctime()),
        crtime: time(m.ctime()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The FUSE filesystem (one mount).
pub struct PowerCutFs {
    pub(super) state: Arc<Mutex<State>>,
}

impl PowerCutFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PowerCutFs {
    /// Remove `name` from the backing directory with `remove` (a file or an empty directory),
    /// and forget its inode and unsynced data.
    fn remove(
        &mut self,
        parent: u64,
        name: &OsStr,
        remove: fn(&Path) -> std::io::Result<()>,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = s.child(parent, name).and_then(|rel| {
            remove(&s.full(&rel)).map_err(errno)?;
            s.forget_path(&rel);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        let r = s.child(parent, name).and_then(|rel| {
            std::fs::symlink_metadata(s.full(&rel)).map_err(errno)?;
            let ino = s.intern(rel);
            s.attr(ino)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.lock().attr(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let rel = s.paths.get(&ino).ok_or(libc::ENOENT)?.clone();
            if let Some(mode) = mode {
                std::fs::set_permissions(
                    s.full(&rel),
                    std::fs::Permissions::from_mode(mode & 0o7777),
                )
                .map_err(errno)?;
            }
            if let Some(len) = size {
                let f = s.file(ino)?.try_clone().map_err(errno)?;
                s.dirty
                    .entry(ino)
                    .or_default()
                    .truncate(&f, len)
                    .map_err(errno)?;
            }
            s.attr(ino)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let r = s.child(parent, name).and_then(|rel| {
            let full = s.full(&rel);
            std::fs::create_dir(&full).map_err(errno)?;
            let _ = std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & 0o7777));
            let ino = s.intern(rel);
            s.attr(ino)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |p| std::fs::remove_file(p), reply);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |p| std::fs::remove_dir(p), reply);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let from = s.child(parent, name)?;
            let to = s.child(newparent, newname)?;
            std::fs::rename(s.full(&from), s.full(&to)).map_err(errno)?;
            s.forget_path(&to);
            // The inode (and its unsynced data) moves with the name, and so do its children.
            let moved: Vec<(PathBuf, u64)> = s
                .inos
                .iter()
                .filter(|(p, _)| p.starts_with(&from))
                .map(|(p, i)| (p.clone(), *i))
                .collect();
            for (old, ino) in moved {
                let new = match old.strip_prefix(&from) {
                    Ok(rest) if rest.as_os_str().is_empty() => to.clone(),
                    Ok(rest) => to.join(rest),
                    Err(_) => continue,
                };
                s.inos.remove(&old);
                s.inos.insert(new.clone(), ino);
                s.paths.insert(ino, new);
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        // Direct I/O: the kernel keeps no page cache that could outlive a cut.
        match self.lock().file(ino) {
            Ok(_) => reply.opened(0, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let r = s.child(parent, name).and_then(|rel| {
            let full = s.full(&rel);
            let mut o = OpenOptions::new();
            o.read(true).write(true).create(true);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
            let f = o.open(&full).map_err(errno)?;
            let _ = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777));
            let ino = s.intern(rel);
            s.files.insert(ino, f);
            if flags & libc::O_TRUNC != 0 {
                let f = s.file(ino)?.try_clone().map_err(errno)?;
                s.dirty
                    .entry(ino)
                    .or_default()
                    .truncate(&f, 0)
                    .map_err(errno)?;
            }
            s.attr(ino)
        });
        match r {
            Ok(a) => reply.created(&TTL, &a, 0, 0, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let f = s.file(ino)?.try_clone().map_err(errno)?;
            let offset = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
            match s.dirty.get(&ino) {
                Some(d) => d.read(&f, offset, size as usize).map_err(errno),
                None => {
                    let mut buf = vec![0; size as usize];
                    let mut n = 0;
                    while n < buf.len() {
                        let k = f.read_at(&mut buf[n..], offset + n as u64).map_err(errno)?;
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    buf.truncate(n);
                    Ok(buf)
                }
            }
        })();
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let f = s.file(ino)?.try_clone().map_err(errno)?;
            let offset = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
            s.dirty
                .entry(ino)
                .or_default()
                .write(&f, offset, data)
                .map_err(errno)
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let f = s.file(ino)?.try_clone().map_err(errno)?;
            if let Some(mut d) = s.dirty.remove(&ino) {
                d.flush(&f).map_err(errno)?;
            } else {
                f.sync_data().map_err(errno)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let Some(rel) = s.paths.get(&ino).cloned() else {
            reply.error(libc::ENOENT);
            return;
        };
        let list = match std::fs::read_dir(s.full(&rel)) {
            Ok(l) => l,
            Err(e) => {
                reply.error(errno(e));
                return;
            }
        };
        let mut entries = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for e in list.flatten() {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let child = s.intern(rel.join(e.file_name()));
            entries.push((child, kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in entries
            .into_iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(0))
        {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(1 << 26, 1 << 25, 1 << 25, 1 << 20, 1 << 19, 4096, 255, 4096);
    }
}
