//! Giving memory back when a model is loaded or leaves, so that what the memory gate counted
//! is what the process holds: the model file's page cache, and the heap's freed pages.
//!
//! The memory gate counts a loaded model's weights as memory the worker holds, and a model not
//! loaded as needing all of them. For the readings to agree with that, the real engine reads
//! the weights into the worker's own memory (llama.cpp without mmap): they count as used in
//! `MemAvailable` and in a cgroup's working set while loaded, and unloading frees them. What
//! the read leaves in the page cache is then dropped (Linux: `posix_fadvise(DONTNEED)` on each
//! file), because cache that a second load made *active* counts in a cgroup's working set
//! until the kernel gets round to it: a model unloaded and loaded again would otherwise seem
//! to need its size twice. macOS counts clean file pages as available memory, so there is
//! nothing to drop there.

use std::path::{Path, PathBuf};

/// The files of the model at `path`: the file itself, or every part of a split GGUF
/// (`name-00001-of-00003.gguf` names parts 1 to 3 beside it).
pub fn model_files(path: &Path) -> Vec<PathBuf> {
    let stem = path.file_stem().and_then(|s| s.to_str());
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("gguf");
    match stem.and_then(crate::registry::split_part) {
        Some((base, _, total)) if total <= 99_999 => (1..=total)
            .map(|k| path.with_file_name(format!("{base}-{k:05}-of-{total:05}.{ext}")))
            .collect(),
        _ => vec![path.to_path_buf()],
    }
}

/// Drop the clean, unmapped cached pages of the model at `path` (every part). Best effort: a
/// file that cannot be opened is skipped.
pub fn drop_cached(path: &Path) {
    for file in model_files(path) {
        if let Err(e) = platform::drop_file(&file) {
            tracing::debug!(file = %file.display(), "page cache not dropped: {e}");
        }
    }
}

/// Return the heap's free pages to the OS after a model or context was freed. llama.cpp
/// frees a model's many small allocations (its vocabulary, its tensor metadata) into the
/// heap, where glibc keeps them: measured on gemma-3-270m, 30–40 MB stayed resident after
/// each unload and grew with every load-unload cycle. `malloc_trim` gives them back. Other
/// allocators (macOS's, musl's) return such memory themselves or offer no call for it.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::os::fd::AsRawFd;

    pub fn drop_file(path: &std::path::Path) -> std::io::Result<()> {
        let f = std::fs::File::open(path)?;
        // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        match rc {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    /// macOS counts clean file-backed pages as free (`kern.memorystatus_level`): nothing to do.
    pub fn drop_file(_: &std::path::Path) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_model_names_all_its_parts_and_a_file_itself() {
        assert_eq!(
            model_files(Path::new("/m/Qwen3-32B-Q4_K_M-00001-of-00003.gguf")),
            vec![
                PathBuf::from("/m/Qwen3-32B-Q4_K_M-00001-of-00003.gguf"),
                PathBuf::from("/m/Qwen3-32B-Q4_K_M-00002-of-00003.gguf"),
                PathBuf::from("/m/Qwen3-32B-Q4_K_M-00003-of-00003.gguf"),
            ]
        );
        assert_eq!(
            model_files(Path::new("/m/gemma.gguf")),
            vec![PathBuf::from("/m/gemma.gguf")]
        );
        // Missing files are skipped, not an error.
        drop_cached(Path::new("/nonexistent/x-00001-of-00002.gguf"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dropping_a_files_cache_empties_it_where_the_file_system_caches_pages() {
        use std::io::Write;
        // A file on disk (not tmpfs, whose pages are memory, not cache): beside the tests.
        let dir = tempfile::Builder::new()
            .prefix(".pagecache-test")
            .tempdir_in(env!("CARGO_MANIFEST_DIR"))
            .unwrap();
        let path = dir.path().join("m.gguf");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 8 << 20]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let _ = std::fs::read(&path).unwrap();
        let before = resident_pages(&path);
        drop_cached(&path);
        let after = resident_pages(&path);
        assert!(
            before > len_pages(&path) / 2,
            "the read cached the file: {before} pages"
        );
        assert!(after < before / 10, "{before} pages cached, {after} after");
    }

    #[cfg(target_os = "linux")]
    fn len_pages(path: &Path) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        (std::fs::metadata(path).unwrap().len() / page) as usize
    }

    /// Pages of `path` in the page cache (mincore over a read-only mapping).
    #[cfg(target_os = "linux")]
    fn resident_pages(path: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of an open file, unmapped before returning; vec
        // has one byte per page of it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }
}
