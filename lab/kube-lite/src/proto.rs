//! Decoding of the Kubernetes protobuf envelope for the few kinds `kubectl create <kind>`
//! generators send as protobuf (Namespace, ConfigMap, Secret, ServiceAccount). Everything else
//! in protobuf gets 415 Unsupported Media Type.

use crate::util::{base64_encode, rfc3339};
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = self.varint()? as usize;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.b.len())
                    .ok_or("truncated field")?;
                let s = &self.b[self.pos..end];
                self.pos = end;
                Field::Bytes(s)
            }
            1 => {
                self.pos += 8;
                Field::Varint(0)
            }
            5 => {
                self.pos += 4;
                Field::Varint(0)
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((num, f)))
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_string())
}

/// map<string, string|bytes> entry
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) if bytes_value => v = json!(base64_encode(x)),
            (2, Field::Bytes(x)) => v = json!(string(x)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut secs = 0i64;
    while let Some((n, f)) = r.next()? {
        if let (1, Field::Varint(v)) = (n, f) {
            secs = v as i64;
        }
    }
    Ok(json!(rfc3339(secs)))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => m.insert("name".into(), json!(string(x)?)),
            (2, Field::Bytes(x)) => m.insert("generateName".into(), json!(string(x)?)),
            (3, Field::Bytes(x)) => m.insert("namespace".into(), json!(string(x)?)),
            (5, Field::Bytes(x)) => m.insert("uid".into(), json!(string(x)?)),
            (6, Field::Bytes(x)) => m.insert("resourceVersion".into(), json!(string(x)?)),
            (8, Field::Bytes(x)) => m.insert("creationTimestamp".into(), time(x)?),
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v)
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                annotations.insert(k, v)
            }
            (14, Field::Bytes(x)) => {
                finalizers.push(json!(string(x)?));
                None
            }
            _ => None,
        };
    }
    if m.get("resourceVersion").and_then(Value::as_str) == Some("") {
        m.remove("resourceVersion");
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

fn body(kind: &str, raw: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(raw);
    let mut obj = json!({});
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut spec_finalizers = Vec::new();
    while let Some((n, f)) = r.next()? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                data.insert(k, v);
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true)?;
                obj["binaryData"][k] = v;
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                obj["immutable"] = json!(v != 0)
            }
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true)?;
                data.insert(k, v);
            }
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = json!(string(x)?),
            ("Secret", 4, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                string_data.insert(k, v);
            }
            ("Namespace", 2, Field::Bytes(x)) => {
                let mut s = Reader::new(x);
                while let Some((n, f)) = s.next()? {
                    if let (1, Field::Bytes(y)) = (n, f) {
                        spec_finalizers.push(json!(string(y)?));
                    }
                }
            }
            ("ServiceAccount", 4, Field::Varint(v)) => {
                obj["automountServiceAccountToken"] = json!(v != 0)
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    if !spec_finalizers.is_empty() {
        obj["spec"] = json!({"finalizers": spec_finalizers});
    }
    Ok(obj)
}

/// Decode a protobuf request body into JSON. Err(message) when it is not one of the supported kinds.
pub fn decode(b: &[u8]) -> Result<Value, String> {
    let rest = b
        .strip_prefix(MAGIC)
        .ok_or("protobuf body without the k8s envelope")?;
    let mut r = Reader::new(rest);
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) =
        (String::new(), String::new(), &[]);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((n, f)) = t.next()? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            (3, Field::Bytes(x)) if !x.is_empty() => {
                return Err("compressed protobuf bodies are not supported".into());
            }
            _ => {}
        }
    }
    if api_version != "v1"
        || !matches!(
            kind.as_str(),
            "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
        )
    {
        return Err(format!(
            "protobuf bodies are only decoded for v1 Namespace, ConfigMap, Secret and ServiceAccount (got {api_version} {kind}); send JSON"
        ));
    }
    let mut obj = body(&kind, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn configmap_envelope() {
        let mut meta = field(1, b"foo");
        meta.extend(field(11, &[field(1, b"app"), field(2, b"web")].concat()));
        let mut raw = field(1, &meta);
        raw.extend(field(2, &[field(1, b"a"), field(2, b"b")].concat()));
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &tm));
        body.extend(field(2, &raw));
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "foo", "labels": {"app": "web"}}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn rejects_garbage_and_other_kinds() {
        assert!(decode(b"garbage").is_err());
        assert!(decode(b"k8s\0\xff\xff\xff").is_err());
        let tm = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &tm));
        assert!(decode(&body).unwrap_err().contains("send JSON"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_hostile_bytes(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut b = MAGIC.to_vec();
            b.extend(tail);
            let _ = decode(&b);
        }
    }
}
