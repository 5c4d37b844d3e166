//! One exact-sized allocation for everything a stored response keeps of its upstream's bytes.
//!
//! hyper hands out a parsed head's header values (and a body's small chunks) as slices of its
//! whole read buffer, 8 KiB or more. Kept as they came, they would keep that buffer alive for as
//! long as the entry lives, and the byte bound would count a fraction of what the cache holds
//! (`tests/memory.rs` measured 11 KiB held per entry against 2.7 KiB counted). So the values and
//! the body are copied into one buffer of exactly their size, and the stored values and body are
//! slices of it: one allocation, and one reference count for a hit to touch.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::HeaderValue;

/// The bytes being copied, and where each piece went.
pub(crate) struct Packer {
    buffer: BytesMut,
}

/// Where a piece sits in the packed buffer.
#[derive(Clone, Copy)]
pub(crate) struct Piece {
    start: usize,
    end: usize,
}

impl Piece {
    /// From this piece's start to `last`'s end (pieces pushed one after the other).
    pub(crate) fn to(self, last: Piece) -> Piece {
        Piece {
            start: self.start,
            end: last.end,
        }
    }
}

impl Packer {
    /// A buffer for exactly `len` bytes.
    pub(crate) fn with_capacity(len: usize) -> Self {
        Self {
            buffer: BytesMut::with_capacity(len),
        }
    }

    /// Copies `bytes` in.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Piece {
        let start = self.buffer.len();
        self.buffer.put_slice(bytes);
        Piece {
            start,
            end: self.buffer.len(),
        }
    }

    /// The packed bytes, to slice the pieces from.
    pub(crate) fn finish(self) -> Packed {
        Packed(self.buffer.freeze())
    }
}

/// The packed bytes, frozen.
pub(crate) struct Packed(Bytes);

impl Packed {
    /// The piece's bytes, sharing the buffer.
    pub(crate) fn bytes(&self, piece: Piece) -> Bytes {
        self.0.slice(piece.start..piece.end)
    }

    /// `original`'s copy, sharing the buffer (and as sensitive as `original`).
    pub(crate) fn value(&self, piece: Piece, original: &HeaderValue) -> HeaderValue {
        // The bytes were a valid value a moment ago, so this cannot fail; should it, the
        // original is kept, which is correct if larger.
        match HeaderValue::from_maybe_shared(self.bytes(piece)) {
            Ok(mut value) => {
                value.set_sensitive(original.is_sensitive());
                value
            }
            Err(_) => original.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_come_back_as_they_went_in_from_one_buffer() {
        let mut packer = Packer::with_capacity(8);
        let mut secret = HeaderValue::from_static("abc");
        secret.set_sensitive(true);
        let a = packer.push(secret.as_bytes());
        let b = packer.push(b"hello");
        let packed = packer.finish();
        let value = packed.value(a, &secret);
        assert_eq!(value, "abc");
        assert!(value.is_sensitive());
        let body = packed.bytes(b);
        assert_eq!(body, "hello");
        assert_eq!(
            value.as_bytes().as_ptr().wrapping_add(3),
            body.as_ptr(),
            "one buffer, in order"
        );
    }
}
