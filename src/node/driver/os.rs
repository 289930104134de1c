//! What the driver asks of the operating system: memory handed back after a restore, a
//! low priority for the background snapshot thread, and directories removed in the background.

/// Hands memory freed by the restore (the log segments read at open, decode buffers) back to
/// the OS. glibc keeps freed heap memory for reuse, and a restart's transient buffers would
/// otherwise stay in the node's RSS (measured: about 55 MB more after a restart with 1M
/// messages than before it).
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's CPU priority to the lowest, so a background snapshot (a copy of
/// the whole state, then its write) yields the cores to the tasks that commit. Measured at 256
/// clients: each snapshot of a growing state showed up as a latency spike of 80 to 300 ms.
/// Only for a thread of its own: an unprivileged process cannot raise a priority again. Best
/// effort: if it fails, the snapshot runs at normal priority.
pub(super) fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take plain integers and change only this thread's
    // scheduling attributes (on Linux, PRIO_PROCESS with a thread id means that thread).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Removes a directory tree on a thread of its own: freeing the blocks of gigabytes of files
/// (an old chat generation after a snapshot install) takes a while, and must not hold up the
/// driver.
pub(super) fn remove_dir_in_background(dir: std::path::PathBuf) {
    let _ = std::thread::Builder::new()
        .name("chat-retire".into())
        .spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old chat generation");
            }
        });
}
