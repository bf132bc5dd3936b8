//! Persistent file handles.
//!
//! Layout (at most 64 bytes, the NFSv3 limit):
//! `[version u8][flags u8][volume id u32][generation u32][kernel handle type i32]`
//! `[kernel handle length u8][kernel handle bytes][tag 8 bytes]`.
//!
//! The kernel handle (from `name_to_handle_at`) survives restarts and moves of the export root
//! to another node; the volume id routes the request; the generation makes handles of a
//! removed-and-recreated volume stale instead of aliasing. The tag is a keyed SipHash of
//! everything before it, with a key kept in the export root: a client cannot relabel a handle
//! of one volume as another volume's (to escape a read-only or squashed export) or forge a
//! handle to something outside the volumes, because only handles we minted carry a valid tag.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;
use thiserror::Error;

pub const VERSION: u8 = 1;
const HEADER: usize = 15;
const TAG: usize = 8;
/// NFSv3's limit on handle size.
pub const MAX_HANDLE: usize = 64;
/// The largest kernel handle that fits.
pub const MAX_KERNEL_BYTES: usize = MAX_HANDLE - HEADER - TAG;

/// Why a handle was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandleError {
    /// Not a handle of ours (wrong size, version or tag).
    #[error("malformed or forged file handle")]
    Bad,
    /// A handle of ours that no longer names anything (volume removed or recreated, file gone).
    #[error("stale file handle")]
    Stale,
}

/// A decoded, authenticated handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    pub volume_id: u32,
    pub generation: u32,
    pub kernel_type: i32,
    pub kernel_bytes: Vec<u8>,
}

/// The secret that authenticates handles of one export root.
#[derive(Clone)]
pub struct HandleKey(pub [u8; 16]);

impl HandleKey {
    fn tag(&self, data: &[u8]) -> [u8; TAG] {
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(data);
        h.finish().to_be_bytes()
    }
}

impl FileHandle {
    /// Encodes and tags the handle. Fails only when the kernel handle is too large for NFSv3.
    pub fn encode(&self, key: &HandleKey) -> Result<Vec<u8>, HandleError> {
        if self.kernel_bytes.len() > MAX_KERNEL_BYTES {
            return Err(HandleError::Bad);
        }
        let mut out = Vec::with_capacity(HEADER + self.kernel_bytes.len() + TAG);
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&self.volume_id.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.kernel_type.to_be_bytes());
        out.push(self.kernel_bytes.len() as u8);
        out.extend_from_slice(&self.kernel_bytes);
        let tag = key.tag(&out);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decodes a handle received from a client and checks its tag.
    pub fn decode(bytes: &[u8], key: &HandleKey) -> Result<Self, HandleError> {
        if bytes.len() < HEADER + TAG || bytes.len() > MAX_HANDLE || bytes[0] != VERSION {
            return Err(HandleError::Bad);
        }
        let klen = bytes[14] as usize;
        if bytes.len() != HEADER + klen + TAG {
            return Err(HandleError::Bad);
        }
        let (body, tag) = bytes.split_at(HEADER + klen);
        if key.tag(body) != tag {
            return Err(HandleError::Bad);
        }
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        Ok(Self {
            volume_id: u32::from_be_bytes(word(2)),
            generation: u32::from_be_bytes(word(6)),
            kernel_type: i32::from_be_bytes(word(10)),
            kernel_bytes: body[HEADER..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileHandle {
        FileHandle {
            volume_id: 7,
            generation: 0xdead_beef,
            kernel_type: 1,
            kernel_bytes: vec![1, 2, 3, 4, 5, 6, 7, 8],
        }
    }

    #[test]
    fn handle_round_trips_and_fits_nfsv3() {
        let key = HandleKey([3; 16]);
        let bytes = sample().encode(&key).unwrap();
        assert!(bytes.len() <= MAX_HANDLE);
        assert_eq!(FileHandle::decode(&bytes, &key).unwrap(), sample());
    }

    #[test]
    fn relabelled_volume_id_is_refused() {
        let key = HandleKey([3; 16]);
        let mut bytes = sample().encode(&key).unwrap();
        bytes[5] ^= 1;
        assert_eq!(FileHandle::decode(&bytes, &key), Err(HandleError::Bad));
    }

    #[test]
    fn handle_from_another_export_root_is_refused() {
        let bytes = sample().encode(&HandleKey([3; 16])).unwrap();
        assert_eq!(
            FileHandle::decode(&bytes, &HandleKey([4; 16])),
            Err(HandleError::Bad)
        );
    }

    #[test]
    fn every_truncation_and_garbage_is_refused() {
        let key = HandleKey([3; 16]);
        let bytes = sample().encode(&key).unwrap();
        for len in 0..bytes.len() {
            assert_eq!(
                FileHandle::decode(&bytes[..len], &key),
                Err(HandleError::Bad)
            );
        }
        assert_eq!(FileHandle::decode(&[1u8; 64], &key), Err(HandleError::Bad));
    }
}
