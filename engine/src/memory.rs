//! One allocator setting for long-running processes: memory once used stays with the process.
//!
//! mimalloc hands pages that stayed free for a while back to the OS (its `purge_delay`), and
//! the next allocation faults them in again, zeroed. The engine frees and allocates big blocks
//! all the time: hash tables as they grow, key-log chunks as keys come in and expire. On a
//! virtual machine that returns free memory to its host (virtio-balloon free page reporting, as
//! on the machine the benchmarks run on), each such fault costs tens of microseconds. So
//! `stockd` and `stock-loadgen` keep what they freed for reuse: their resident size stays at
//! its peak instead of shrinking after a busy hour.

use std::os::raw::{c_int, c_long};
// Links the mimalloc library where no global allocator is declared (the unit tests).
use mimalloc as _;

extern "C" {
    // From the mimalloc library that the `mimalloc` crate links (declared here because
    // `libmimalloc-sys` declares it only behind a feature that pulls in one more crate).
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e`, the same in its v2 and v3 (the
/// numbering is stable: retired options keep their slots).
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Tells the global allocator (mimalloc) never to hand freed memory back to the OS. Call it
/// first thing in `main` of a binary whose global allocator is `mimalloc::MiMalloc`.
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's options to a documented value (-1: never purge); mimalloc
    // reads it when it next considers a purge, from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// The option number is mimalloc's purge delay (its default, 1000 ms, tells it apart from
    /// the options around it), and the call sets it to "never".
    #[test]
    fn freed_memory_is_kept() {
        // SAFETY: reads one of mimalloc's options.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000, "mimalloc's default purge delay");
        keep_freed_memory();
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
