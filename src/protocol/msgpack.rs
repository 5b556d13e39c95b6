//! A small strict MessagePack reader over a byte slice, for the envelope decoders ([`super::decode`]).
//!
//! The trap it avoids: serde's visitors do not see MessagePack types. rmp-serde hands a `bin` and a `str` whose
//! bytes are not UTF-8 to the same `visit_bytes`, lets `String` take a `bin` and `serde_bytes` take a `str`, and
//! lets a derived struct take an array. The envelopes' documented types can only be checked where the markers are
//! seen, so the envelopes are read here, marker by marker: every value is reported with its MessagePack type, and
//! `str` and `bin` payloads are borrowed from the input (nothing is allocated until a field is kept).
//!
//! Skipping a value ([`Reader::skip`]) is iterative with a counter of values still to read, so a deeply nested
//! document cannot overflow the stack, and every step consumes at least one byte, so it ends on any input.

/// One MessagePack value's head: its type, with the payload of scalars and the length of containers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Head<'a> {
    Nil,
    Bool(bool),
    /// An int in an unsigned encoding (positive fixint, `uint 8..64`).
    Uint(u64),
    /// An int in a signed encoding (negative fixint, `int 8..64`), which may still be non-negative.
    Int(i64),
    Float,
    /// A `str`'s bytes, not yet checked to be UTF-8.
    Str(&'a [u8]),
    Bin(&'a [u8]),
    /// An array of this many values (not read yet).
    Array(u32),
    /// A map of this many pairs (not read yet).
    Map(u32),
    /// An extension value (payload skipped).
    Ext,
}

impl Head<'_> {
    /// The MessagePack type's name, for messages ("must be bin, got str").
    #[inline]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Head::Nil => "nil",
            Head::Bool(_) => "bool",
            Head::Uint(_) | Head::Int(_) => "int",
            Head::Float => "float",
            Head::Str(_) => "str",
            Head::Bin(_) => "bin",
            Head::Array(_) => "array",
            Head::Map(_) => "map",
            Head::Ext => "ext",
        }
    }

    /// The int's value when it is a non-negative int in any encoding; `Err` says what it was instead.
    #[inline]
    pub(crate) fn as_u64(&self) -> Result<u64, String> {
        match *self {
            Head::Uint(n) => Ok(n),
            Head::Int(n) if n >= 0 => Ok(n as u64),
            Head::Int(n) => Err(format!("negative int {n}")),
            other => Err(other.kind().to_owned()),
        }
    }
}

/// Reads MessagePack values from the front of a slice.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

/// The message for input that ends inside a value.
const ENDS_EARLY: &str = "the data ends early (truncated)";

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not read yet.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(ENDS_EARLY.to_owned());
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    #[inline]
    fn len8(&mut self) -> Result<usize, String> {
        Ok(self.be::<1>()?[0] as usize)
    }

    #[inline]
    fn len16(&mut self) -> Result<usize, String> {
        Ok(u16::from_be_bytes(self.be()?) as usize)
    }

    #[inline]
    fn len32(&mut self) -> Result<usize, String> {
        Ok(u32::from_be_bytes(self.be()?) as usize)
    }

    /// Reads the next value's head: for `str`, `bin` and `ext` the whole value, for arrays and maps only their
    /// length.
    // Always inlined: returned through memory, a head costs a store-forwarding stall per value (measured).
    #[inline(always)]
    pub(crate) fn head(&mut self) -> Result<Head<'a>, String> {
        let marker = self.be::<1>()?[0];
        Ok(match marker {
            0x00..=0x7f => Head::Uint(u64::from(marker)),
            0x80..=0x8f => Head::Map(u32::from(marker & 0x0f)),
            0x90..=0x9f => Head::Array(u32::from(marker & 0x0f)),
            0xa0..=0xbf => Head::Str(self.take(usize::from(marker & 0x1f))?),
            0xc0 => Head::Nil,
            0xc1 => return Err("the never-used marker 0xc1".to_owned()),
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4 => {
                let n = self.len8()?;
                Head::Bin(self.take(n)?)
            }
            0xc5 => {
                let n = self.len16()?;
                Head::Bin(self.take(n)?)
            }
            0xc6 => {
                let n = self.len32()?;
                Head::Bin(self.take(n)?)
            }
            // ext 8/16/32: length, type, data.
            0xc7..=0xc9 => {
                let n = match marker {
                    0xc7 => self.len8()?,
                    0xc8 => self.len16()?,
                    _ => self.len32()?,
                };
                self.take(1 + n)?;
                Head::Ext
            }
            0xca => {
                self.take(4)?;
                Head::Float
            }
            0xcb => {
                self.take(8)?;
                Head::Float
            }
            0xcc => Head::Uint(u64::from(u8::from_be_bytes(self.be()?))),
            0xcd => Head::Uint(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Head::Uint(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Head::Uint(u64::from_be_bytes(self.be()?)),
            0xd0 => Head::Int(i64::from(i8::from_be_bytes(self.be()?))),
            0xd1 => Head::Int(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Head::Int(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Head::Int(i64::from_be_bytes(self.be()?)),
            // fixext 1/2/4/8/16: type, data.
            0xd4..=0xd8 => {
                self.take(1 + (1 << (marker - 0xd4)))?;
                Head::Ext
            }
            0xd9 => {
                let n = self.len8()?;
                Head::Str(self.take(n)?)
            }
            0xda => {
                let n = self.len16()?;
                Head::Str(self.take(n)?)
            }
            0xdb => {
                let n = self.len32()?;
                Head::Str(self.take(n)?)
            }
            0xdc => Head::Array(self.len16()? as u32),
            0xdd => Head::Array(self.len32()? as u32),
            0xde => Head::Map(self.len16()? as u32),
            0xdf => Head::Map(self.len32()? as u32),
            0xe0..=0xff => Head::Int(i64::from(marker as i8)),
        })
    }

    /// Skips the rest of a value whose head was just read (nothing for a scalar, the elements of a container).
    ///
    /// This runs over every value of every `params` and `data` document, so it works on the markers directly
    /// instead of building a [`Head`] per value.
    pub(crate) fn skip_after(&mut self, head: Head<'a>) -> Result<(), String> {
        let mut pending: u64 = match head {
            Head::Array(n) => u64::from(n),
            Head::Map(n) => 2 * u64::from(n),
            _ => return Ok(()),
        };
        let buf = self.rest;
        let mut pos = 0;
        while pending > 0 {
            // Every value takes at least one byte: a count beyond the input cannot be met, whatever follows.
            if pending > (buf.len() - pos) as u64 {
                return Err(ENDS_EARLY.to_owned());
            }
            pending -= 1;
            let marker = buf[pos];
            pos += 1;
            // (bytes of a length field, fixed bytes after it, values it contains)
            let (len_bytes, fixed, values): (usize, usize, u64) = match marker {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => continue,
                0x80..=0x8f => (0, 0, 2 * u64::from(marker & 0x0f)),
                0x90..=0x9f => (0, 0, u64::from(marker & 0x0f)),
                0xa0..=0xbf => (0, usize::from(marker & 0x1f), 0),
                0xc1 => return Err("the never-used marker 0xc1".to_owned()),
                0xc4 | 0xd9 => (1, 0, 0),
                0xc5 | 0xda => (2, 0, 0),
                0xc6 | 0xdb => (4, 0, 0),
                0xc7 => (1, 1, 0),
                0xc8 => (2, 1, 0),
                0xc9 => (4, 1, 0),
                0xca | 0xce | 0xd2 => (0, 4, 0),
                0xcb | 0xcf | 0xd3 => (0, 8, 0),
                0xcc | 0xd0 => (0, 1, 0),
                0xcd | 0xd1 => (0, 2, 0),
                0xd4..=0xd8 => (0, 1 + (1 << (marker - 0xd4)), 0),
                0xdc | 0xde => (2, 0, 0),
                0xdd | 0xdf => (4, 0, 0),
            };
            let mut skip = fixed;
            if len_bytes > 0 {
                let Some(field) = buf.get(pos..pos + len_bytes) else {
                    return Err(ENDS_EARLY.to_owned());
                };
                pos += len_bytes;
                let len = field.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
                match marker {
                    0xdc | 0xdd => pending += len,
                    0xde | 0xdf => pending += 2 * len,
                    _ => skip += len as usize,
                }
            }
            pending += values;
            if skip > buf.len() - pos {
                return Err(ENDS_EARLY.to_owned());
            }
            pos += skip;
        }
        self.rest = &buf[pos..];
        Ok(())
    }

    /// Skips one complete value.
    pub(crate) fn skip(&mut self) -> Result<(), String> {
        let head = self.head()?;
        self.skip_after(head)
    }
}

/// Checks that `bytes` are exactly one complete MessagePack document: nothing missing, nothing after it.
pub(crate) fn check_one_document(bytes: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(bytes);
    reader.skip()?;
    match reader.remaining() {
        0 => Ok(()),
        n => Err(format!("{n} trailing bytes after the document")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_is_read_with_its_type() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x05], "int"),
            (&[0xff], "int"),
            (&[0xcc, 0x80], "int"),
            (&[0xd3, 0, 0, 0, 0, 0, 0, 0, 1], "int"),
            (&[0xc0], "nil"),
            (&[0xc3], "bool"),
            (&[0xca, 0, 0, 0, 0], "float"),
            (&[0xcb, 0, 0, 0, 0, 0, 0, 0, 0], "float"),
            (&[0xa1, b'x'], "str"),
            (&[0xd9, 1, b'x'], "str"),
            (&[0xc4, 1, 0], "bin"),
            (&[0xc5, 0, 1, 0], "bin"),
            (&[0x91, 0xc0], "array"),
            (&[0xdc, 0, 1, 0xc0], "array"),
            (&[0x81, 0xc0, 0xc0], "map"),
            (&[0xd4, 1, 0], "ext"),
            (
                &[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "ext",
            ),
            (&[0xc7, 2, 1, 0, 0], "ext"),
        ];
        for (bytes, kind) in cases {
            assert_eq!(
                Reader::new(bytes).head().unwrap().kind(),
                *kind,
                "{bytes:x?}"
            );
            check_one_document(bytes).unwrap_or_else(|e| panic!("{bytes:x?}: {e}"));
            // Inside a container, the value is skipped by the marker table instead.
            let wrapped = [&[0x91][..], bytes].concat();
            check_one_document(&wrapped).unwrap_or_else(|e| panic!("{wrapped:x?}: {e}"));
        }
    }

    #[test]
    fn incomplete_or_extended_documents_are_refused() {
        for bad in [
            &[][..],
            &[0xc1],
            &[0x92, 0x01],
            &[0x81, 0x01],
            &[0xa3, b'a'],
            &[0xc4],
            &[0xcd, 0x01],
            &[0xd5, 0x01],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0x01, 0x02],
            &[0x90, 0xc0],
        ] {
            assert!(check_one_document(bad).is_err(), "{bad:x?}");
            let wrapped = [&[0x91][..], bad].concat();
            assert!(check_one_document(&wrapped).is_err(), "{wrapped:x?}");
        }
    }

    #[test]
    fn deep_nesting_does_not_use_the_stack() {
        let mut deep = vec![0x91; 1_000_000];
        deep.push(0xc0);
        check_one_document(&deep).expect("a deep but complete document");
        deep.pop();
        assert!(check_one_document(&deep).is_err());
    }

    /// Skips a value the slow way: a head per value, recursively.
    fn reference_skip(reader: &mut Reader<'_>) -> Result<(), String> {
        match reader.head()? {
            Head::Array(n) => (0..n).try_for_each(|_| reference_skip(reader)),
            Head::Map(n) => (0..2 * u64::from(n)).try_for_each(|_| reference_skip(reader)),
            _ => Ok(()),
        }
    }

    proptest::proptest! {
        /// The marker table of `skip_after` agrees with `head` on any input: the same verdict, the same rest.
        #[test]
        fn skipping_agrees_with_reading_every_head(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            containers in proptest::collection::vec(0x80u8..0xa0, 0..4),
        ) {
            // Lead with small containers so the table is used, not only the head of the first value.
            bytes.splice(0..0, containers);
            let (mut fast, mut slow) = (Reader::new(&bytes), Reader::new(&bytes));
            let (f, s) = (fast.skip(), reference_skip(&mut slow));
            proptest::prop_assert_eq!(f.is_ok(), s.is_ok(), "{:x?}: {:?} vs {:?}", bytes, f, s);
            if f.is_ok() {
                proptest::prop_assert_eq!(fast.remaining(), slow.remaining());
            }
        }
    }

    #[test]
    fn signed_encodings_of_non_negative_ints_count_as_ints() {
        assert_eq!(Head::Int(3).as_u64(), Ok(3));
        assert_eq!(Head::Uint(u64::MAX).as_u64(), Ok(u64::MAX));
        assert!(Head::Int(-1).as_u64().unwrap_err().contains("negative"));
        assert_eq!(Head::Float.as_u64().unwrap_err(), "float");
    }
}
