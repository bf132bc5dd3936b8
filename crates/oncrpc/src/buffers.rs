//! A small pool of large I/O buffers (1 MiB READ replies and WRITE records).
//!
//! Fresh 1 MiB allocations come back from the allocator as new pages: the kernel must fault
//! (and with transparent huge pages, zero 2 MiB) before each READ can copy into them. Reusing
//! a handful of buffers keeps them resident; the pool's size bounds what it retains.

use std::sync::Mutex;

/// Buffers smaller than this are not worth pooling.
const MIN_POOLED: usize = 64 * 1024;
/// Nor are unusually large ones.
const MAX_POOLED: usize = 4 * 1024 * 1024;
/// At most this many idle buffers are kept (about 17 MiB of 1 MiB transfers).
const POOL_SIZE: usize = 16;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with at least `capacity` bytes of capacity, reused when possible.
pub fn take(capacity: usize) -> Vec<u8> {
    if capacity >= MIN_POOLED {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pool.iter().position(|b| b.capacity() >= capacity) {
            return pool.swap_remove(i);
        }
    }
    Vec::with_capacity(capacity)
}

/// Returns a buffer to the pool (or frees it if the pool is full or it is not pool-sized).
pub fn give(mut buf: Vec<u8>) {
    if !(MIN_POOLED..=MAX_POOLED).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_SIZE {
        pool.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_empty() {
        let mut b = take(1 << 20);
        b.extend_from_slice(&[7; 100]);
        give(b);
        let again = take(1 << 20);
        assert!(again.is_empty());
        assert!(again.capacity() >= 1 << 20);
    }

    #[test]
    fn small_buffers_are_not_pooled() {
        give(Vec::with_capacity(100));
        assert!(take(100).capacity() >= 100);
    }
}
