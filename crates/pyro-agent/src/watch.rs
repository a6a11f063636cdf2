//! Directory watchers under `/workspace` (inotify): each collects the changes under its directory
//! (and, recursive, under every directory made below it later) until the host takes them. Every
//! directory is opened beneath `/workspace` without following symlinks before it is watched.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyro_proto::{WatchEvent, WatchEventKind};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::confine::{self, Beneath};
use crate::files::STAGING_PREFIX;

/// Watchers per VM; a new one beyond this replaces the oldest.
const MAX_WATCHERS: usize = 32;
/// Events kept per watcher until taken; beyond this the oldest go (and the host is told).
const MAX_EVENTS: usize = 10_000;
/// Directories one recursive watcher watches at most.
const MAX_DIRECTORIES: usize = 8192;
/// Bytes of names one take returns at most (the rest wait for the next): the reply is one message.
const MAX_TAKE_BYTES: usize = 4 << 20;

struct Watcher {
    id: String,
    recursive: bool,
    fd: AsyncFd<OwnedFd>,
    /// Watch descriptor → the directory's path relative to the watched one (`""`: itself).
    dirs: Mutex<HashMap<i32, String>>,
    events: Mutex<VecDeque<WatchEvent>>,
    dropped: Mutex<bool>,
    /// The watched directory itself is gone: nothing more will come.
    gone: std::sync::atomic::AtomicBool,
    arrived: Notify,
    /// The directory watched, relative to `/workspace`.
    root: String,
    reader: Mutex<Option<tokio::task::AbortHandle>>,
}

static WATCHERS: Mutex<Vec<Arc<Watcher>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn find(id: &str) -> io::Result<Arc<Watcher>> {
    lock(&WATCHERS)
        .iter()
        .find(|w| w.id == id)
        .cloned()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("watcher '{id}' not found")))
}

const MASK: u32 = libc::IN_CREATE
    | libc::IN_CLOSE_WRITE
    | libc::IN_MODIFY
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR;

impl Watcher {
    /// Watches the directory `rel` (relative to `/workspace`), known to the watcher as `name`.
    fn add(&self, root: &Beneath, rel: &str, name: &str) -> io::Result<()> {
        if lock(&self.dirs).len() >= MAX_DIRECTORIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a watcher watches at most {MAX_DIRECTORIES} directories"),
            ));
        }
        let dir = root.open(rel, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        // The descriptor's magic link is followed to the directory opened beneath /workspace.
        let path = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid inotify descriptor and path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        lock(&self.dirs).insert(wd, name.to_string());
        Ok(())
    }

    /// Watches `rel` and, recursive, every directory below it. With `report`, what is found in a
    /// directory just made is reported as created: it may have come before the watch did.
    fn add_tree(&self, root: &Beneath, rel: &str, name: &str, report: bool) -> io::Result<()> {
        self.add(root, rel, name)?;
        if !self.recursive {
            return Ok(());
        }
        let dir = root.open(
            rel,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        for child in confine::list_dir(dir.as_raw_fd())? {
            let Ok(st) = confine::lstat_at(dir.as_raw_fd(), &child) else {
                continue;
            };
            if report && !child.starts_with(STAGING_PREFIX) {
                self.push(WatchEvent {
                    name: join(name, &child),
                    kind: WatchEventKind::Create,
                });
            }
            if confine::is_dir(&st) {
                // One that went meanwhile (or became a link) does not end the others' watch; a
                // limit reached does.
                let child_rel = join(rel, &child);
                match self.add_tree(root, &child_rel, &join(name, &child), report) {
                    Err(err)
                        if !matches!(
                            err.raw_os_error(),
                            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                        ) =>
                    {
                        return Err(err)
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn push(&self, event: WatchEvent) {
        let mut events = lock(&self.events);
        if events.len() >= MAX_EVENTS {
            events.pop_front();
            *lock(&self.dropped) = true;
        }
        events.push_back(event);
        drop(events);
        self.arrived.notify_waiters();
    }

    /// Turns one buffer of inotify records into events.
    fn handle(&self, mut buf: &[u8]) {
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        while buf.len() >= HEADER {
            // SAFETY: the kernel wrote a whole record here; read_unaligned copes with alignment.
            let record: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            let end = HEADER + record.len as usize;
            if buf.len() < end {
                return;
            }
            let raw_name = &buf[HEADER..end];
            let name = String::from_utf8_lossy(raw_name.split(|b| *b == 0).next().unwrap_or(&[]))
                .into_owned();
            buf = &buf[end..];
            if record.mask & libc::IN_Q_OVERFLOW != 0 {
                *lock(&self.dropped) = true;
                continue;
            }
            if record.mask & libc::IN_IGNORED != 0 {
                let name = lock(&self.dirs).remove(&record.wd);
                if name.as_deref() == Some("") {
                    self.gone.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.arrived.notify_waiters();
                }
                continue;
            }
            let Some(dir) = lock(&self.dirs).get(&record.wd).cloned() else {
                continue;
            };
            // The agent's own staging files are not the changes anyone made.
            if name.is_empty() || name.starts_with(STAGING_PREFIX) {
                continue;
            }
            let path = join(&dir, &name);
            let kind = if record.mask & libc::IN_CREATE != 0 || record.mask & libc::IN_MOVED_TO != 0
            {
                WatchEventKind::Create
            } else if record.mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE) != 0 {
                WatchEventKind::Write
            } else if record.mask & libc::IN_DELETE != 0 {
                WatchEventKind::Remove
            } else if record.mask & libc::IN_MOVED_FROM != 0 {
                WatchEventKind::Rename
            } else if record.mask & libc::IN_ATTRIB != 0 {
                WatchEventKind::Chmod
            } else {
                continue;
            };
            let new_dir = self.recursive
                && record.mask & libc::IN_ISDIR != 0
                && matches!(kind, WatchEventKind::Create);
            self.push(WatchEvent {
                name: path.clone(),
                kind,
            });
            if new_dir {
                if let Ok(root) = Beneath::workspace() {
                    let _ = self.add_tree(&root, &join(&self.root, &path), &path, true);
                }
            }
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Starts watching the directory `path` under `/workspace`; returns the watcher's id.
pub fn start(path: &str, recursive: bool) -> io::Result<String> {
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    let st = root.lstat(&rel)?;
    if !confine::is_dir(&st) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", confine::absolute(&rel)),
        ));
    }
    // SAFETY: inotify_init1 takes flags only.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the AsyncFd owns the descriptor for its lifetime.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let mut id_bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id_bytes)?;
    let watcher = Arc::new(Watcher {
        id: id_bytes.iter().map(|b| format!("{b:02x}")).collect(),
        recursive,
        fd,
        dirs: Mutex::new(HashMap::new()),
        events: Mutex::new(VecDeque::new()),
        dropped: Mutex::new(false),
        gone: std::sync::atomic::AtomicBool::new(false),
        arrived: Notify::new(),
        root: rel.clone(),
        reader: Mutex::new(None),
    });
    watcher.add_tree(&root, &rel, "", false)?;
    let reader = {
        let watcher = watcher.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let Ok(mut ready) = watcher.fd.readable().await else {
                    return;
                };
                match ready.try_io(|inner| {
                    let fd = inner.as_raw_fd();
                    // SAFETY: read into a buffer we own, of its length.
                    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                }) {
                    Ok(Ok(0) | Err(_)) => return,
                    Ok(Ok(n)) => watcher.handle(&buf[..n]),
                    Err(_would_block) => continue,
                }
            }
        })
    };
    *lock(&watcher.reader) = Some(reader.abort_handle());
    let mut watchers = lock(&WATCHERS);
    if watchers.len() >= MAX_WATCHERS {
        let oldest = watchers.remove(0);
        stop_one(&oldest);
    }
    watchers.push(watcher.clone());
    Ok(watcher.id.clone())
}

/// The events so far (taken), waiting up to `wait` for a first one; and whether some were lost.
pub async fn events(id: &str, wait: Duration) -> io::Result<(Vec<WatchEvent>, bool)> {
    let watcher = find(id)?;
    let arrived = watcher.arrived.notified();
    tokio::pin!(arrived);
    arrived.as_mut().enable();
    let gone = || watcher.gone.load(std::sync::atomic::Ordering::Relaxed);
    if lock(&watcher.events).is_empty() && !wait.is_zero() && !gone() {
        let _ = tokio::time::timeout(wait, arrived).await;
    }
    let mut events = Vec::new();
    {
        let mut kept = lock(&watcher.events);
        let mut bytes = 0;
        while let Some(event) = kept.pop_front() {
            // As the reply spells it (escapes included).
            bytes +=
                serde_json::to_string(&event.name).map_or(event.name.len() * 6, |n| n.len()) + 16;
            if bytes > MAX_TAKE_BYTES && !events.is_empty() {
                kept.push_front(event);
                break;
            }
            events.push(event);
        }
    }
    if events.is_empty() && gone() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the directory watcher '{id}' watched was removed"),
        ));
    }
    let dropped = std::mem::take(&mut *lock(&watcher.dropped));
    Ok((events, dropped))
}

fn stop_one(watcher: &Watcher) {
    if let Some(reader) = lock(&watcher.reader).take() {
        reader.abort();
    }
}

pub fn stop(id: &str) -> io::Result<()> {
    let watcher = find(id)?;
    lock(&WATCHERS).retain(|w| w.id != id);
    stop_one(&watcher);
    Ok(())
}
