//! Executable memory for compiled programs: the JIT's code buffer.
//!
//! One anonymous private mapping per program, made in three steps that each
//! check their result: `mmap` read-write, copy the code in (the rest of the
//! last page is filled with `int3`), `mprotect` to read-execute. The pages
//! are never writable and executable at the same time, and they are never
//! written again: a [`CodeMemory`] is immutable from the moment it exists,
//! which is what makes sharing it between worker threads sound. `Drop`
//! unmaps them.
//!
//! `libc` is the dependency for this: three system calls through their
//! plain C prototypes, the same crate the standard library itself uses, and
//! nothing else of it is needed (a larger wrapper such as `memmap2` or
//! `region` would add an API surface to audit for no gain).
#![allow(unsafe_code)]

use std::ptr::NonNull;

/// Why code memory could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeMemoryError {
    /// `mmap` failed.
    #[error("mmap of {len} bytes for JIT code failed: errno {errno}")]
    Map {
        /// Bytes asked for.
        len: usize,
        /// The OS error number.
        errno: i32,
    },
    /// `mprotect` to read-execute failed (the mapping was released).
    #[error("mprotect(PROT_READ|PROT_EXEC) of JIT code failed: errno {errno}")]
    Protect {
        /// The OS error number.
        errno: i32,
    },
}

/// A read-execute mapping holding one compiled program.
pub(crate) struct CodeMemory {
    ptr: NonNull<u8>,
    /// Mapped bytes (whole pages).
    mapped: usize,
    /// Bytes of code.
    len: usize,
}

// SAFETY: the mapping is never written after `new` returns (it is
// read-execute), so shared access from any thread is race-free; ownership
// of the mapping moves with the value.
unsafe impl Send for CodeMemory {}
// SAFETY: as above: `&CodeMemory` only ever reads or executes the bytes.
unsafe impl Sync for CodeMemory {}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl CodeMemory {
    /// Maps `code` read-execute.
    ///
    /// # Errors
    /// [`CodeMemoryError`] when `mmap` or `mprotect` fails.
    pub(crate) fn new(code: &[u8]) -> Result<CodeMemory, CodeMemoryError> {
        let page = page_size();
        let mapped = code.len().max(1).div_ceil(page) * page;
        // SAFETY: an anonymous private mapping at an address the kernel
        // chooses: it cannot overlap any existing Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(CodeMemoryError::Map {
                len: mapped,
                errno: errno(),
            });
        }
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else {
            return Err(CodeMemoryError::Map {
                len: mapped,
                errno: 0,
            });
        };
        let mem = CodeMemory {
            ptr,
            mapped,
            len: code.len(),
        };
        // SAFETY: the mapping is `mapped >= code.len()` bytes, writable, and
        // exclusively ours; the source is a distinct Rust slice.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), mapped) };
        bytes[..code.len()].copy_from_slice(code);
        // Whatever a stray jump could reach past the code traps.
        bytes[code.len()..].fill(0xcc);
        // SAFETY: `ptr..ptr+mapped` is exactly our mapping; after this call
        // nothing writes to it again (`bytes` is not used past this point).
        let rc = unsafe { libc::mprotect(p, mapped, libc::PROT_READ | libc::PROT_EXEC) };
        if rc != 0 {
            // `mem` is dropped here, which unmaps the pages.
            return Err(CodeMemoryError::Protect { errno: errno() });
        }
        Ok(mem)
    }

    /// The address of byte `off` of the code.
    pub(crate) fn addr(&self, off: usize) -> u64 {
        debug_assert!(off < self.len);
        self.ptr.as_ptr() as u64 + off as u64
    }

    /// The code bytes (for inspection: disassembly, tests).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping hold the code, are
        // readable (PROT_READ), and never change while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The program's entry point as a callable function.
    ///
    /// The returned pointer is valid only while `self` lives.
    pub(crate) fn entry(&self) -> super::EntryFn {
        // SAFETY: offset 0 of the mapping is the entry stub the code
        // generator emitted, which implements exactly the `EntryFn` C ABI
        // (see the "Calling convention" section of the module docs); the
        // mapping is executable.
        unsafe { std::mem::transmute::<*mut u8, super::EntryFn>(self.ptr.as_ptr()) }
    }
}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+mapped` is a mapping this value owns; no code in
        // it can be running, because running it needs `&JitProgram`, whose
        // borrow has ended before drop.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped) };
        debug_assert_eq!(rc, 0, "munmap of JIT code failed: errno {}", errno());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_readable_and_padded_with_int3() {
        let m = CodeMemory::new(&[0x90, 0xc3]).unwrap();
        assert_eq!(m.bytes(), &[0x90, 0xc3]);
        assert!(m.mapped >= page_size());
    }
}
