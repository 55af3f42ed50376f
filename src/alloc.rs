//! The allocator. Many small, short-lived allocations per request (headers, URIs, log lines):
//! mimalloc's thread-local free lists serve them faster than glibc's malloc (measured: +20%
//! requests per second in the peer harness).
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every allocation through `mi_malloc_aligned`,
//! whose fast path in mimalloc 3 takes the next free block only if its address happens to
//! have the requested alignment, and otherwise over-allocates on a slow path (several
//! of keygate's allocations a request went there under callgrind). Every
//! mimalloc block is at least word-aligned, so for alignments up to 8 plain `mi_malloc` is
//! exact and always fast; larger alignments still ask for them.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc blocks are multiples of the word size, in word-aligned pages.
const WORD: usize = std::mem::size_of::<usize>();

struct MiMalloc;

// SAFETY: each method forwards to the mimalloc function with the same contract, choosing the
// aligned variant whenever the layout asks for more than the word alignment every block has.
unsafe impl GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[global_allocator]
static ALLOC: MiMalloc = MiMalloc;

/// Hands memory freed by a bulk job (loading a large key table frees hundreds of MB of parse
/// buffers) back to the OS now, instead of whenever mimalloc next gets around to it.
pub fn return_free_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    /// Every alignment up to a page is honoured, across the sizes the request path uses.
    #[test]
    fn allocations_have_the_alignment_they_ask_for() {
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1usize, 3, 7, 8, 12, 24, 40, 100, 1000, 70_000] {
                let layout = std::alloc::Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero-size layout, freed with the same layout.
                unsafe {
                    let p = std::alloc::alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    let q = std::alloc::realloc(p, layout, size * 2);
                    assert_eq!(q as usize % align, 0, "realloc to {} align {align}", size * 2);
                    std::alloc::dealloc(q, std::alloc::Layout::from_size_align(size * 2, align).unwrap());
                    let z = std::alloc::alloc_zeroed(layout);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    std::alloc::dealloc(z, layout);
                }
            }
        }
    }
}
