//! The protocol-buffer wire format, write side only, as much as `profile.proto` needs:
//! varints, length-delimited fields (strings, packed repeated scalars, nested messages).
//!
//! A nested message's length is known only once its body is written. Rather than encode
//! the body into scratch memory, [`ProtoWriter::begin`] leaves one byte for the length and
//! [`ProtoWriter::end`] fills it in; a body of 128 bytes or more needs a longer varint, and
//! `end` slides the body right to make room. Profile messages (a sample, a location) are
//! short, so the slide is rare and small. Nesting works because an inner message always
//! ends before its outer one, and the slide only moves bytes after the inner mark.
//!
//! Scalars equal to zero are not written: proto3 readers treat a missing scalar as zero,
//! and pprof's files are full of zero ids and indexes. Reference: the protobuf encoding
//! guide, <https://protobuf.dev/programming-guides/encoding/>.

use tessera_sys::error::OsError;

use super::buf::OsBuf;

/// The longest varint: 64 bits in 7-bit groups.
pub const MAX_VARINT_LEN: usize = 10;

/// How a field's payload is laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WireType {
    /// A varint.
    Varint = 0,
    /// A length varint, then that many bytes.
    LengthDelimited = 2,
}

/// Where an unfinished length-delimited field's length byte sits; from [`ProtoWriter::begin`].
#[derive(Debug)]
#[must_use = "a begun field must be closed with `ProtoWriter::end`"]
pub struct Open {
    key_at: usize,
    length_at: usize,
}

/// Encodes `value` as a varint into `out`, returning the number of bytes used.
pub fn encode_varint(mut value: u64, out: &mut [u8; MAX_VARINT_LEN]) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = value as u8 | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
}

/// The number of bytes `value` takes as a varint.
pub fn varint_len(value: u64) -> usize {
    // 1 + floor(bits / 7), with zero taking one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends protobuf fields to an [`OsBuf`].
#[derive(Debug)]
pub struct ProtoWriter<'b> {
    out: &'b mut OsBuf,
}

impl<'b> ProtoWriter<'b> {
    /// A writer appending to `out`.
    pub fn new(out: &'b mut OsBuf) -> Self {
        Self { out }
    }

    /// The buffer being written.
    pub fn buf(&mut self) -> &mut OsBuf {
        self.out
    }

    /// A raw varint.
    pub fn varint(&mut self, value: u64) -> Result<(), OsError> {
        let mut tmp = [0; MAX_VARINT_LEN];
        let n = encode_varint(value, &mut tmp);
        self.out.extend(&tmp[..n])
    }

    /// A field key: the field number and wire type.
    pub fn key(&mut self, field: u32, wire: WireType) -> Result<(), OsError> {
        self.varint((u64::from(field) << 3) | wire as u64)
    }

    /// A `uint64` field; nothing when zero.
    pub fn uint64(&mut self, field: u32, value: u64) -> Result<(), OsError> {
        if value == 0 {
            return Ok(());
        }
        self.key(field, WireType::Varint)?;
        self.varint(value)
    }

    /// An `int64` field (negative values take ten bytes, as protobuf specifies); nothing when
    /// zero.
    pub fn int64(&mut self, field: u32, value: i64) -> Result<(), OsError> {
        self.uint64(field, value as u64)
    }

    /// A `bool` field; nothing when false.
    pub fn bool(&mut self, field: u32, value: bool) -> Result<(), OsError> {
        self.uint64(field, u64::from(value))
    }

    /// A `bytes` or `string` field, written even when empty (a repeated string's empty
    /// element is still an element).
    pub fn bytes(&mut self, field: u32, value: &[u8]) -> Result<(), OsError> {
        self.key(field, WireType::LengthDelimited)?;
        self.varint(value.len() as u64)?;
        self.out.extend(value)
    }

    /// A packed repeated varint field (`repeated uint64`/`int64`); nothing when empty.
    pub fn packed(
        &mut self,
        field: u32,
        mut values: impl Iterator<Item = u64> + Clone,
    ) -> Result<(), OsError> {
        let len: usize = values.clone().map(varint_len).sum();
        if len == 0 {
            return Ok(());
        }
        self.key(field, WireType::LengthDelimited)?;
        self.varint(len as u64)?;
        self.out.reserve(len)?;
        values.try_for_each(|v| self.varint(v))
    }

    /// Starts a length-delimited field (a nested message or a packed list written piece by
    /// piece); close it with [`end`](Self::end).
    pub fn begin(&mut self, field: u32) -> Result<Open, OsError> {
        let key_at = self.out.len();
        self.key(field, WireType::LengthDelimited)?;
        let length_at = self.out.len();
        self.out.push(0)?;
        Ok(Open { key_at, length_at })
    }

    /// Closes a field from [`begin`](Self::begin): writes its length, sliding the body right
    /// when the length needs more than one byte.
    pub fn end(&mut self, open: Open) -> Result<(), OsError> {
        let body_at = open.length_at + 1;
        let body_len = self.out.len() - body_at;
        let mut tmp = [0; MAX_VARINT_LEN];
        let n = encode_varint(body_len as u64, &mut tmp);
        if n > 1 {
            self.out.extend_fill(0, n - 1)?;
            let bytes = self.out.as_mut_slice();
            bytes.copy_within(body_at..body_at + body_len, body_at + n - 1);
        }
        self.out.as_mut_slice()[open.length_at..open.length_at + n].copy_from_slice(&tmp[..n]);
        Ok(())
    }

    /// Abandons a field from [`begin`](Self::begin), dropping everything written since.
    pub fn abandon(&mut self, open: Open) {
        self.out.truncate(open.key_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut ProtoWriter<'_>) -> Result<(), OsError>) -> OsBuf {
        let mut buf = OsBuf::new();
        f(&mut ProtoWriter::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn varints_match_hand_encoding() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (150, &[0x96, 0x01]),
            (300, &[0xac, 0x02]),
            (16_384, &[0x80, 0x80, 0x01]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(value, bytes) in cases {
            let buf = written(|w| w.varint(value));
            assert_eq!(buf.as_slice(), bytes, "{value}");
            assert_eq!(varint_len(value), bytes.len(), "{value}");
        }
    }

    #[test]
    fn scalar_fields() {
        // The encoding guide's example: field 1 = 150 is 08 96 01.
        assert_eq!(
            written(|w| w.uint64(1, 150)).as_slice(),
            &[0x08, 0x96, 0x01]
        );
        assert_eq!(written(|w| w.uint64(3, 0)).as_slice(), &[] as &[u8]);
        assert_eq!(written(|w| w.bool(7, true)).as_slice(), &[0x38, 0x01]);
        // -1 as int64: ten bytes of two's complement.
        let neg = written(|w| w.int64(12, -1));
        assert_eq!(neg.as_slice()[0], 0x60);
        assert_eq!(neg.len(), 11);
        // Field 16 needs a two-byte key: (16 << 3) | 0 = 128.
        assert_eq!(written(|w| w.uint64(16, 2)).as_slice(), &[0x80, 0x01, 0x02]);
    }

    #[test]
    fn strings_and_packed_lists() {
        // The guide's example: field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
        assert_eq!(
            written(|w| w.bytes(2, b"testing")).as_slice(),
            b"\x12\x07testing"
        );
        assert_eq!(written(|w| w.bytes(6, b"")).as_slice(), &[0x32, 0x00]);
        // The guide's packed example: field 4 = [3, 270, 86942] is 22 06 03 8e 02 9e a7 05.
        let values = [3u64, 270, 86_942];
        assert_eq!(
            written(|w| w.packed(4, values.iter().copied())).as_slice(),
            &[0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]
        );
        assert_eq!(
            written(|w| w.packed(4, [].iter().copied())).as_slice(),
            &[] as &[u8]
        );
    }

    #[test]
    fn nested_messages_get_their_lengths() {
        // The guide's example: message Test3 { Test1 c = 3; } with c.a = 150 is
        // 1a 03 08 96 01.
        let buf = written(|w| {
            let m = w.begin(3)?;
            w.uint64(1, 150)?;
            w.end(m)
        });
        assert_eq!(buf.as_slice(), &[0x1a, 0x03, 0x08, 0x96, 0x01]);
        let empty = written(|w| {
            let m = w.begin(1)?;
            w.end(m)
        });
        assert_eq!(empty.as_slice(), &[0x0a, 0x00]);
    }

    #[test]
    fn long_nested_bodies_slide_right() {
        // Outer { inner (field 2) { 200-byte string field 1 }, then field 5 = 1 }.
        let payload = [0xabu8; 200];
        let buf = written(|w| {
            let outer = w.begin(1)?;
            let inner = w.begin(2)?;
            w.bytes(1, &payload)?;
            w.end(inner)?;
            w.uint64(5, 1)?;
            w.end(outer)
        });
        // inner body: 0a c8 01 + 200 bytes = 203 bytes -> length cb 01.
        // outer body: 12 cb 01 + 203 + 28 01 = 208 bytes -> length d0 01.
        let mut expect = vec![0x0a, 0xd0, 0x01, 0x12, 0xcb, 0x01, 0x0a, 0xc8, 0x01];
        expect.extend_from_slice(&payload);
        expect.extend_from_slice(&[0x28, 0x01]);
        assert_eq!(buf.as_slice(), &expect[..]);
    }

    #[test]
    fn abandon_drops_the_field() {
        let buf = written(|w| {
            w.uint64(1, 1)?;
            let m = w.begin(2)?;
            w.uint64(1, 99)?;
            w.abandon(m);
            Ok(())
        });
        assert_eq!(buf.as_slice(), &[0x08, 0x01]);
    }
}
