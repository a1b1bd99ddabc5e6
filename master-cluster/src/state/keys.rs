//! Composite keys whose byte order is the order of their parts.
//!
//! A key is a sequence of parts. A string part is its bytes with every `0x00` escaped as
//! `0x00 0xFF`, closed by `0x00 0x01`; a number part is 8 bytes big-endian. So comparing two
//! encoded keys byte by byte compares their parts in order, strings as strings, numbers as
//! numbers, and a key is a prefix of every key that extends it — which is what range scans over
//! an index (all computers of a software release, all children of an instance) rely on.

/// Builds an encoded key part by part.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key(Vec<u8>);

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const END_OF_STRING: u8 = 0x01;

impl Key {
    pub fn new() -> Self {
        Self(Vec::with_capacity(48))
    }

    pub fn str(mut self, part: &str) -> Self {
        for &b in part.as_bytes() {
            self.0.push(b);
            if b == ESCAPE {
                self.0.push(ESCAPED_ZERO);
            }
        }
        self.0.extend_from_slice(&[ESCAPE, END_OF_STRING]);
        self
    }

    pub fn u64(mut self, part: u64) -> Self {
        self.0.extend_from_slice(&part.to_be_bytes());
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The smallest byte string greater than every key that starts with this one: the
    /// exclusive end of a prefix scan. `None` when there is none (the empty prefix, or one of
    /// only `0xFF` bytes): the scan is unbounded above.
    pub fn prefix_end(&self) -> Option<Vec<u8>> {
        let mut end = self.0.clone();
        while end.last() == Some(&0xFF) {
            end.pop();
        }
        let last = end.last_mut()?;
        *last += 1;
        Some(end)
    }

    /// The bounds of a scan over every key that starts with this one.
    pub fn prefix_range(&self) -> (std::ops::Bound<&[u8]>, std::ops::Bound<Vec<u8>>) {
        use std::ops::Bound;
        (
            Bound::Included(self.as_bytes()),
            self.prefix_end().map_or(Bound::Unbounded, Bound::Excluded),
        )
    }
}

/// Reads parts back from an encoded key, in the order they were written.
#[derive(Debug)]
pub struct KeyReader<'a> {
    bytes: &'a [u8],
}

/// A stored key that does not have the parts its table promises.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed key: {0}")]
pub struct KeyError(&'static str);

impl<'a> KeyReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn str(&mut self) -> Result<String, KeyError> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            match self.bytes.get(i..i + 2) {
                Some([ESCAPE, END_OF_STRING]) => break,
                Some([ESCAPE, ESCAPED_ZERO]) => {
                    out.push(0);
                    i += 2;
                }
                Some([ESCAPE, _]) => return Err(KeyError("bad escape in a string part")),
                _ => match self.bytes.get(i) {
                    Some(&b) => {
                        out.push(b);
                        i += 1;
                    }
                    None => return Err(KeyError("unterminated string part")),
                },
            }
        }
        self.bytes = &self.bytes[i + 2..];
        String::from_utf8(out).map_err(|_| KeyError("string part is not UTF-8"))
    }

    pub fn u64(&mut self) -> Result<u64, KeyError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<8>() else {
            return Err(KeyError("short number part"));
        };
        self.bytes = rest;
        Ok(u64::from_be_bytes(*head))
    }

    pub fn finish(&self) -> Result<(), KeyError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(KeyError("trailing bytes after the last part"))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(a: &str, n: u64) -> Vec<u8> {
        Key::new().str(a).u64(n).into_bytes()
    }

    proptest! {
        #[test]
        fn byte_order_is_part_order(a in ".*", b in ".*", n in any::<u64>(), m in any::<u64>()) {
            prop_assert_eq!(key(&a, n).cmp(&key(&b, m)), (a.as_bytes(), n).cmp(&(b.as_bytes(), m)));
        }

        #[test]
        fn parts_read_back(a in ".*", n in any::<u64>(), b in "\\PC*") {
            let bytes = Key::new().str(&a).u64(n).str(&b).into_bytes();
            let mut r = KeyReader::new(&bytes);
            prop_assert_eq!(r.str().expect("a"), a);
            prop_assert_eq!(r.u64().expect("n"), n);
            prop_assert_eq!(r.str().expect("b"), b);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn a_prefix_scan_covers_exactly_the_extensions(p in ".*", q in ".*", n in any::<u64>()) {
            let prefix = Key::new().str(&p);
            let end = prefix.prefix_end().expect("a string part ends in 0x01");
            let extended = prefix.clone().u64(n).into_bytes();
            prop_assert!(prefix.as_bytes() <= extended.as_slice() && extended < end);
            let other = Key::new().str(&q).u64(n).into_bytes();
            let inside = prefix.as_bytes() <= other.as_slice() && other < end;
            prop_assert_eq!(inside, p == q);
            let number = Key::new().u64(n);
            let after = Key::new().u64(n).str(&q).into_bytes();
            match number.prefix_end() {
                Some(end) => prop_assert!(after < end),
                None => prop_assert_eq!(n, u64::MAX),
            }
        }
    }

    #[test]
    fn strings_with_zero_bytes_keep_their_order() {
        assert!(key("a", 9) < key("a\0", 0));
        assert!(key("a\0", 0) < key("a\0\0", 0));
        assert!(key("a\0z", 0) < key("a\u{1}", 0));
        assert_eq!(
            KeyReader::new(&Key::new().str("x\0y").into_bytes()).str(),
            Ok("x\0y".to_string())
        );
    }

    #[test]
    fn the_empty_prefix_scans_everything() {
        assert_eq!(Key::new().prefix_end(), None);
        assert_eq!(Key::new().u64(u64::MAX).prefix_end(), None);
        assert_eq!(
            Key::new().u64(0xFF).prefix_end(),
            Some(vec![0, 0, 0, 0, 0, 0, 1])
        );
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert!(KeyReader::new(b"abc").str().is_err());
        assert!(KeyReader::new(&[0, 7]).str().is_err());
        assert!(KeyReader::new(&[1, 2, 3]).u64().is_err());
        assert!(KeyReader::new(&[0, 1, 5]).finish().is_err());
    }
}
