//! Record marking (RFC 5531 section 11): a record is one or more fragments, each preceded by a
//! 4-byte header holding the fragment length and a last-fragment bit.
//!
//! Reading is bounded: a record whose fragments add up to more than `max_record` bytes is an
//! error before any of its body is buffered, so a hostile length costs nothing.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

const LAST_FRAGMENT: u32 = 0x8000_0000;

/// Why a record could not be read.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("record of at least {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("connection closed in the middle of a record")]
    Truncated,
    #[error("record not complete within {0:?} of its first byte")]
    TimedOut(std::time::Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one whole record into `buf` (cleared first). Returns `Ok(false)` on a clean end of
/// stream between records.
pub async fn read_record<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_record: usize,
) -> Result<bool, RecordError> {
    buf.clear();
    let mut first = true;
    loop {
        let mut header = [0u8; 4];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return if first && buf.is_empty() {
                    Ok(false)
                } else {
                    Err(RecordError::Truncated)
                };
            }
            Err(e) => return Err(e.into()),
        }
        first = false;
        let header = u32::from_be_bytes(header);
        let len = (header & !LAST_FRAGMENT) as usize;
        let total = buf.len() + len;
        if total > max_record {
            return Err(RecordError::TooLarge(total, max_record));
        }
        read_fragment(reader, buf, len).await?;
        if header & LAST_FRAGMENT != 0 {
            return Ok(true);
        }
    }
}

/// Appends a fragment body of `len` bytes to `buf`.
pub(crate) async fn read_fragment<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<(), RecordError> {
    let total = buf.len() + len;
    // Read into spare capacity: a 1 MiB WRITE is not zero-filled before being overwritten.
    if buf.capacity() < total {
        let mut bigger = crate::buffers::take(total);
        bigger.extend_from_slice(buf);
        crate::buffers::give(std::mem::replace(buf, bigger));
    }
    let got = (&mut *reader).take(len as u64).read_to_end(buf).await?;
    if got < len {
        return Err(RecordError::Truncated);
    }
    Ok(())
}

/// The length and last-fragment bit of a fragment header.
pub(crate) fn fragment_header(header: [u8; 4]) -> (usize, bool) {
    let h = u32::from_be_bytes(header);
    ((h & !LAST_FRAGMENT) as usize, h & LAST_FRAGMENT != 0)
}

/// Prefixes `body` (which must start with 4 reserved bytes) with a single last-fragment header.
pub fn seal_record(body: &mut [u8]) {
    let len = u32::try_from(body.len() - 4).unwrap_or(u32::MAX >> 1) & !LAST_FRAGMENT;
    body[..4].copy_from_slice(&(len | LAST_FRAGMENT).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(data: &[u8], last: bool) -> Vec<u8> {
        let mut h = data.len() as u32;
        if last {
            h |= LAST_FRAGMENT;
        }
        let mut v = h.to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    #[tokio::test]
    async fn multi_fragment_record_is_joined() {
        let mut wire = frag(b"abc", false);
        wire.extend(frag(b"def", true));
        let mut buf = Vec::new();
        let mut r = &wire[..];
        assert!(read_record(&mut r, &mut buf, 100).await.unwrap());
        assert_eq!(buf, b"abcdef");
        assert!(!read_record(&mut r, &mut buf, 100).await.unwrap());
    }

    #[tokio::test]
    async fn oversized_fragment_is_refused_before_reading_it() {
        let wire = (0x7fff_ffffu32 | LAST_FRAGMENT).to_be_bytes();
        let mut buf = Vec::new();
        let err = read_record(&mut &wire[..], &mut buf, 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, RecordError::TooLarge(_, _)));
        assert!(buf.capacity() < 1 << 20);
    }

    #[tokio::test]
    async fn many_small_fragments_cannot_exceed_the_bound() {
        let mut wire = Vec::new();
        for _ in 0..10 {
            wire.extend(frag(&[0u8; 40], false));
        }
        let mut buf = Vec::new();
        let err = read_record(&mut &wire[..], &mut buf, 100)
            .await
            .unwrap_err();
        assert!(matches!(err, RecordError::TooLarge(_, 100)));
    }

    #[tokio::test]
    async fn eof_inside_a_record_is_truncation() {
        let mut wire = frag(b"abcdef", true);
        wire.truncate(7);
        let mut buf = Vec::new();
        let err = read_record(&mut &wire[..], &mut buf, 100)
            .await
            .unwrap_err();
        assert!(matches!(err, RecordError::Truncated));
    }
}
