//! The protobuf wire format (https://protobuf.dev/programming-guides/encoding/), as much of it as
//! the CRI messages the lab sends and reads need: varints, length-delimited fields (strings,
//! nested messages, `map<string, string>` entries) and skipping of fixed-width fields it does not
//! read. Encoding builds a message field by field; decoding walks the fields of a buffer and
//! refuses malformed input (truncated varints or lengths, unknown wire types, non-UTF-8 strings).

/// A message being encoded. proto3 leaves scalar fields at their default out of the wire, and so
/// does this encoder (empty strings, zero numbers, false, empty messages are written only by
/// [`Enc::message_always`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Enc(Vec<u8>);

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Enc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    fn len_field(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, LEN);
        put_varint(&mut self.0, bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    /// A `string` field (left out when empty).
    pub fn string(mut self, field: u32, s: &str) -> Self {
        if !s.is_empty() {
            self.len_field(field, s.as_bytes());
        }
        self
    }

    /// A `repeated string` field.
    pub fn strings<S: AsRef<str>>(mut self, field: u32, items: &[S]) -> Self {
        for s in items {
            self.len_field(field, s.as_ref().as_bytes());
        }
        self
    }

    /// An `int64`, `uint32` or enum field (left out when zero). Negative `int64`s take ten bytes
    /// (two's complement), as protobuf encodes them.
    pub fn int(mut self, field: u32, v: i64) -> Self {
        if v != 0 {
            self.key(field, VARINT);
            put_varint(&mut self.0, v as u64);
        }
        self
    }

    /// A `bool` field (left out when false).
    pub fn bool(self, field: u32, v: bool) -> Self {
        self.int(field, i64::from(v))
    }

    /// A nested message (left out when it has no fields).
    pub fn message(mut self, field: u32, m: Enc) -> Self {
        if !m.0.is_empty() {
            self.len_field(field, &m.0);
        }
        self
    }

    /// A nested message written even when empty (its presence means something, e.g. a wrapper
    /// `Int64Value` of 0).
    pub fn message_always(mut self, field: u32, m: Enc) -> Self {
        self.len_field(field, &m.0);
        self
    }

    /// A `map<string, string>` field: one entry message (key 1, value 2) per pair.
    pub fn map<'a>(
        mut self,
        field: u32,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        for (k, v) in pairs {
            let entry = Enc::new().string(1, k).string(2, v);
            self.len_field(field, &entry.0);
        }
        self
    }
}

/// What a field holds on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed64 or fixed32 field (the lab reads none; it is skipped).
    Fixed,
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated varint at byte {0}")]
    Varint(usize),
    #[error("field {field}: length {len} runs past the end of the message ({left} bytes left)")]
    Length { field: u32, len: u64, left: usize },
    #[error("field {field}: unsupported wire type {wire}")]
    WireType { field: u32, wire: u8 },
    #[error("field number 0 at byte {0}")]
    FieldZero(usize),
    #[error("field {0}: not UTF-8")]
    Utf8(u32),
    #[error("field {field}: wire type does not match (want {want})")]
    Mismatch { field: u32, want: &'static str },
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let start = *pos;
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(DecodeError::Varint(start))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Varint(start))
}

/// Every field of a message, in wire order (repeated fields appear once per element).
pub fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let key = get_varint(buf, &mut pos)?;
        let field = u32::try_from(key >> 3).map_err(|_| DecodeError::FieldZero(at))?;
        if field == 0 {
            return Err(DecodeError::FieldZero(at));
        }
        let wire = (key & 7) as u8;
        let value = match wire {
            VARINT => Value::Varint(get_varint(buf, &mut pos)?),
            LEN => {
                let len = get_varint(buf, &mut pos)?;
                let left = buf.len() - pos;
                if len > left as u64 {
                    return Err(DecodeError::Length { field, len, left });
                }
                let v = &buf[pos..pos + len as usize];
                pos += len as usize;
                Value::Bytes(v)
            }
            FIXED64 | FIXED32 => {
                let n = if wire == FIXED64 { 8 } else { 4 };
                let left = buf.len() - pos;
                if n > left {
                    return Err(DecodeError::Length {
                        field,
                        len: n as u64,
                        left,
                    });
                }
                pos += n;
                Value::Fixed
            }
            _ => return Err(DecodeError::WireType { field, wire }),
        };
        out.push((field, value));
    }
    Ok(out)
}

/// A decoded message with typed accessors (the last occurrence of a singular field wins, as in
/// protobuf).
#[derive(Debug, Clone)]
pub struct Msg<'a>(Vec<(u32, Value<'a>)>);

impl<'a> Msg<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Msg(fields(buf)?))
    }

    fn bytes_all(&self, field: u32) -> Result<Vec<&'a [u8]>, DecodeError> {
        self.0
            .iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, v)| match v {
                Value::Bytes(b) => Ok(*b),
                _ => Err(DecodeError::Mismatch {
                    field,
                    want: "length-delimited",
                }),
            })
            .collect()
    }

    /// A `string` field ("" when absent).
    pub fn string(&self, field: u32) -> Result<String, DecodeError> {
        Ok(self.strings(field)?.pop().unwrap_or_default())
    }

    /// A `repeated string` field.
    pub fn strings(&self, field: u32) -> Result<Vec<String>, DecodeError> {
        self.bytes_all(field)?
            .into_iter()
            .map(|b| {
                std::str::from_utf8(b)
                    .map(str::to_string)
                    .map_err(|_| DecodeError::Utf8(field))
            })
            .collect()
    }

    /// A varint field (0 when absent).
    pub fn int(&self, field: u32) -> Result<u64, DecodeError> {
        let mut out = 0;
        for (f, v) in &self.0 {
            if *f == field {
                match v {
                    Value::Varint(n) => out = *n,
                    _ => {
                        return Err(DecodeError::Mismatch {
                            field,
                            want: "varint",
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// A nested message (empty when absent).
    pub fn message(&self, field: u32) -> Result<Msg<'a>, DecodeError> {
        // Protobuf merges repeated occurrences of a singular message; the CRI runtimes send
        // one, and concatenating the occurrences is that merge for the fields read here.
        let mut all = Vec::new();
        for b in self.bytes_all(field)? {
            all.extend(fields(b)?);
        }
        Ok(Msg(all))
    }

    /// A `repeated` message field.
    pub fn messages(&self, field: u32) -> Result<Vec<Msg<'a>>, DecodeError> {
        self.bytes_all(field)?.into_iter().map(Msg::parse).collect()
    }

    /// A `map<string, string>` field.
    pub fn map(&self, field: u32) -> Result<Vec<(String, String)>, DecodeError> {
        self.messages(field)?
            .into_iter()
            .map(|e| Ok((e.string(1)?, e.string(2)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_like_protobuf() {
        // protobuf.dev's encoding guide: field 1 = 150 is 08 96 01; field 2 = "testing" is
        // 12 07 74 65 73 74 69 6e 67.
        assert_eq!(Enc::new().int(1, 150).into_bytes(), [0x08, 0x96, 0x01]);
        assert_eq!(
            Enc::new().string(2, "testing").into_bytes(),
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        // Defaults stay off the wire; a wrapper message is written even when empty.
        assert!(
            Enc::new()
                .int(1, 0)
                .string(2, "")
                .bool(3, false)
                .message(4, Enc::new())
                .into_bytes()
                .is_empty()
        );
        assert_eq!(
            Enc::new().message_always(5, Enc::new()).into_bytes(),
            [0x2a, 0x00]
        );
        // -1 as int64 is ten bytes.
        assert_eq!(Enc::new().int(1, -1).into_bytes().len(), 11);
        // A map entry is a message of key 1 and value 2.
        assert_eq!(
            Enc::new().map(6, [("a", "b")]).into_bytes(),
            [0x32, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b']
        );
    }

    #[test]
    fn decodes_what_it_encodes() {
        let inner = Enc::new().string(1, "198.18.64.5").into_bytes();
        let buf = Enc::new()
            .string(1, "id")
            .int(3, 1)
            .message(
                5,
                Enc::new()
                    .string(1, "198.18.64.5")
                    .message(2, Enc::new().string(1, "fd00:64::5")),
            )
            .map(7, [("k", "v"), ("k2", "")])
            .strings(9, &["x", "y"])
            .into_bytes();
        let m = Msg::parse(&buf).unwrap();
        assert_eq!(m.string(1).unwrap(), "id");
        assert_eq!(m.int(3).unwrap(), 1);
        assert_eq!(m.int(4).unwrap(), 0);
        let net = m.message(5).unwrap();
        assert_eq!(net.string(1).unwrap(), "198.18.64.5");
        assert_eq!(net.messages(2).unwrap()[0].string(1).unwrap(), "fd00:64::5");
        assert_eq!(
            m.map(7).unwrap(),
            vec![
                ("k".to_string(), "v".to_string()),
                ("k2".to_string(), String::new())
            ]
        );
        assert_eq!(m.strings(9).unwrap(), vec!["x", "y"]);
        assert!(m.message(8).unwrap().string(1).unwrap().is_empty());
        assert_eq!(inner.len(), 13);
    }

    #[test]
    fn skips_fixed_width_fields() {
        // field 2 fixed64, field 3 fixed32, then field 1 string.
        let mut buf = vec![0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1d, 1, 2, 3, 4];
        buf.extend(Enc::new().string(1, "ok").into_bytes());
        assert_eq!(Msg::parse(&buf).unwrap().string(1).unwrap(), "ok");
    }

    #[test]
    fn refuses_malformed_messages() {
        // Truncated varint.
        assert_eq!(fields(&[0x08, 0x96]), Err(DecodeError::Varint(1)));
        // A varint longer than ten bytes.
        assert!(matches!(
            fields(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(DecodeError::Varint(1))
        ));
        // A length past the end.
        assert_eq!(
            fields(&[0x0a, 0x05, b'a']),
            Err(DecodeError::Length {
                field: 1,
                len: 5,
                left: 1
            })
        );
        // A huge length does not allocate or overflow.
        assert!(matches!(
            fields(&[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(DecodeError::Length { .. })
        ));
        // Group wire types (3, 4) and the unused 6, 7.
        for wire in [3u8, 4, 6, 7] {
            assert_eq!(
                fields(&[0x08 | wire]),
                Err(DecodeError::WireType { field: 1, wire })
            );
        }
        // Field number 0.
        assert_eq!(fields(&[0x00, 0x00]), Err(DecodeError::FieldZero(0)));
        // Truncated fixed64.
        assert!(matches!(
            fields(&[0x09, 1, 2]),
            Err(DecodeError::Length { .. })
        ));
        // Not UTF-8.
        let m = Msg::parse(&[0x0a, 0x02, 0xff, 0xfe]).unwrap();
        assert_eq!(m.string(1), Err(DecodeError::Utf8(1)));
        // A string where a number is expected, and the other way round.
        assert!(matches!(m.int(1), Err(DecodeError::Mismatch { .. })));
        let n = Msg::parse(&[0x08, 0x01]).unwrap();
        assert!(matches!(n.string(1), Err(DecodeError::Mismatch { .. })));
        // A malformed nested message.
        let bad = Msg::parse(&[0x2a, 0x02, 0x0a, 0x05]).unwrap();
        assert!(bad.message(5).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(m) = Msg::parse(&buf) {
                for f in 1..4 {
                    let _ = m.string(f);
                    let _ = m.int(f);
                    let _ = m.map(f);
                    let _ = m.message(f).and_then(|n| n.string(1));
                }
            }
        }

        #[test]
        fn strings_and_numbers_round_trip(s in ".{0,40}", n in any::<i64>(), f in 1u32..536_870_910) {
            let buf = Enc::new().string(f, &s).int(f + 1, n).into_bytes();
            let m = Msg::parse(&buf).unwrap();
            prop_assert_eq!(m.string(f).unwrap(), s);
            prop_assert_eq!(m.int(f + 1).unwrap() as i64, n);
        }
    }
}
