//! vip-l7's global allocator: mimalloc, called the way its fast paths expect.
//!
//! Why mimalloc: the request path allocates and frees many small objects (header maps, futures,
//! buffers); see docs/benchmarks.md (the vip-l7 hot path sections).
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it passes every allocation to `mi_malloc_aligned`,
//! whose fast path only covers blocks of at most 1 KB; anything larger (hyper's 8 KB read
//! buffers, the ~3.6 KB boxed request future) takes mimalloc's generic aligned path, ~280
//! instructions a call under callgrind against ~60 for `mi_malloc`. mimalloc aligns every block of
//! 16 bytes or more to 16 (`MI_MAX_ALIGN_SIZE`), so, like std's `System` allocator over glibc,
//! layouts that need no more than that go to the plain calls and only stricter ones (tokio's
//! 128-byte aligned task cells, for one) to the aligned calls.

#![allow(unsafe_code)] // the GlobalAlloc impl and its FFI calls into mimalloc

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment mimalloc guarantees for any block of at least this size (x86_64 and aarch64).
const MIN_ALIGN: usize = 16;

/// mimalloc as the global allocator; `#[global_allocator] static A: MiAlloc = MiAlloc;`.
pub struct MiAlloc;

#[inline]
fn plain(layout: &Layout) -> bool {
    layout.align() <= MIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every call forwards to mimalloc with a size and alignment that satisfy `layout`:
// `plain` layouts are served by blocks that mimalloc aligns to at least `MIN_ALIGN` (and at least
// to their size class, which is >= the layout's alignment), the rest by the aligned calls.
unsafe impl GlobalAlloc for MiAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: FFI calls with a valid size and a power-of-two alignment (from `Layout`).
        unsafe {
            if plain(&layout) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(&layout) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc contract); mimalloc frees any block.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc contract).
        unsafe {
            if layout.align() <= MIN_ALIGN && layout.align() <= new_size {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe fn fill(p: *mut u8, n: usize) {
        for i in 0..n {
            unsafe { *p.add(i) = i as u8 };
        }
    }

    unsafe fn check(p: *const u8, n: usize) {
        for i in 0..n {
            assert_eq!(unsafe { *p.add(i) }, i as u8, "byte {i} of {n}");
        }
    }

    /// Every size and alignment a Rust program can ask for comes back aligned, writable, zeroed
    /// when asked, and keeps its bytes through growing and shrinking reallocations.
    #[test]
    fn layouts_come_back_aligned_and_keep_their_bytes() {
        let a = MiAlloc;
        let sizes = [
            1usize, 7, 8, 9, 15, 16, 24, 40, 48, 100, 1000, 1024, 1025, 3600, 8192, 70_000,
        ];
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for &size in &sizes {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert!(!z.is_null());
                    assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);

                    let mut p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    fill(p, size);
                    for new_size in [size / 2 + 1, size * 3] {
                        let grown = a.realloc(p, layout, new_size);
                        assert!(!grown.is_null());
                        assert_eq!(
                            grown as usize % align,
                            0,
                            "{size}->{new_size} align {align}"
                        );
                        check(grown, size.min(new_size));
                        let new_layout = Layout::from_size_align(new_size, align).unwrap();
                        p = a.realloc(grown, new_layout, size);
                        assert_eq!(p as usize % align, 0, "{new_size}->{size} align {align}");
                        check(p, size.min(new_size));
                        fill(p, size);
                    }
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
