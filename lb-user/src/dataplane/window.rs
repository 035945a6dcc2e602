//! A window of the Maglev array mapped into this process (`BPF_F_MMAPABLE`):
//! a table is written with plain stores instead of M syscalls, and unmapped
//! right after, so the agent's RSS does not grow with the tables.

use std::os::fd::BorrowedFd;

use anyhow::{Context, Result};

use crate::sys::Mapping;

/// The kernel lays array values out at an 8-byte stride: each u32 slot is
/// the low half of a u64.
const STRIDE: usize = 8;
const PAGE: usize = 4096;

/// Slots `first..first + len` of an array, mapped.
pub struct Window {
    map: Mapping,
    /// First wanted slot, as an index into the mapping.
    skip: usize,
    len: usize,
}

impl Window {
    /// Maps slots `first..first + len` of the array behind `fd`.
    pub fn new(fd: BorrowedFd<'_>, first: usize, len: usize) -> Result<Window> {
        let start = first * STRIDE;
        let offset = start / PAGE * PAGE;
        let bytes = (start + len * STRIDE - offset).next_multiple_of(PAGE);
        let map = Mapping::new(fd, offset, bytes).context("mapping the Maglev array")?;
        Ok(Window {
            map,
            skip: (start - offset) / STRIDE,
            len,
        })
    }

    /// The slots, one per word.
    pub fn slots(&mut self) -> &mut [u64] {
        &mut self.map.words()[self.skip..self.skip + self.len]
    }
}
