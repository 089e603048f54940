//! Credentials for a remote API server: read from a RemoteCluster's inline fields or from the
//! Secret its `spec.credentialsSecretRef` names (the operator), and written into that Secret
//! (`kubectl hybridnet cluster connect`). One shape, so that the writer and the reader agree on
//! the keys and the rules (docs/multicluster.md, Credentials).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::RemoteClusterSpec;
use super::secret_key;

/// The line a PEM certificate (or CA bundle) holds.
pub(crate) const CERT_MARKER: &str = "-----BEGIN CERTIFICATE-----";
/// The end of the line a PEM private key (PKCS#1, PKCS#8, SEC1) holds.
pub(crate) const KEY_MARKER: &str = "PRIVATE KEY-----";

/// Whether `data` is text holding the PEM `marker` line.
pub(crate) fn is_pem(data: &[u8], marker: &str) -> bool {
    std::str::from_utf8(data).is_ok_and(|t| t.contains(marker))
}

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client certificate and its key (PEM).
    Certificate { cert_pem: Vec<u8>, key_pem: Vec<u8> },
    /// A bearer token.
    Token(String),
}

/// A CA bundle to trust the remote API server by, and the client's identity.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// PEM CA bundle.
    pub ca_pem: Vec<u8>,
    pub auth: ClientAuth,
}

// Never print key material, also not in a debug log.
impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuth::Certificate { .. } => "client certificate",
            ClientAuth::Token(_) => "token",
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("auth", &self.auth)
            .finish()
    }
}

fn pem(what: &str, data: &[u8], marker: &str) -> Result<Vec<u8>, String> {
    if is_pem(data, marker) {
        Ok(data.to_vec())
    } else {
        Err(format!("{what} is not PEM data (no {marker:?} line)"))
    }
}

/// A bearer token as an HTTP header can carry it.
pub fn check_token(what: &str, token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if token.len() > 16 * 1024 {
        return Err(format!(
            "{what} is {} bytes long, more than 16 KiB",
            token.len()
        ));
    }
    if token.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{what} holds whitespace, control or non-ASCII characters; a bearer token has none"
        ));
    }
    Ok(())
}

impl Credentials {
    /// From the Secret's `data` (keys [`secret_key`]). Errors name the key.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, String> {
        let get = |k: &str| {
            data.get(k)
                .map(|b| b.0.as_slice())
                .filter(|b| !b.is_empty())
        };
        let ca = get(secret_key::CA)
            .ok_or_else(|| format!("key {:?} (the CA bundle) is missing", secret_key::CA))?;
        let ca_pem = pem(&format!("key {:?}", secret_key::CA), ca, CERT_MARKER)?;
        let auth = match (
            get(secret_key::CERT),
            get(secret_key::KEY),
            get(secret_key::TOKEN),
        ) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(format!(
                    "holds both a client certificate ({:?}/{:?}) and {:?}; keep one",
                    secret_key::CERT,
                    secret_key::KEY,
                    secret_key::TOKEN
                ));
            }
            (Some(cert), Some(key), None) => ClientAuth::Certificate {
                cert_pem: pem(&format!("key {:?}", secret_key::CERT), cert, CERT_MARKER)?,
                key_pem: pem(&format!("key {:?}", secret_key::KEY), key, KEY_MARKER)?,
            },
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err(format!(
                    "a client certificate needs both {:?} and {:?}",
                    secret_key::CERT,
                    secret_key::KEY
                ));
            }
            (None, None, Some(token)) => {
                let what = format!("key {:?}", secret_key::TOKEN);
                let token = std::str::from_utf8(token)
                    .map_err(|_| format!("{what} is not UTF-8"))?
                    .trim_end_matches('\n');
                check_token(&what, token)?;
                ClientAuth::Token(token.to_string())
            }
            (None, None, None) => {
                return Err(format!(
                    "has neither {:?} + {:?} (a client certificate) nor {:?}",
                    secret_key::CERT,
                    secret_key::KEY,
                    secret_key::TOKEN
                ));
            }
        };
        Ok(Self { ca_pem, auth })
    }

    /// The Secret's `data` that [`Credentials::from_secret_data`] reads back.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let mut d = BTreeMap::new();
        d.insert(secret_key::CA.to_string(), ByteString(self.ca_pem.clone()));
        match &self.auth {
            ClientAuth::Certificate { cert_pem, key_pem } => {
                d.insert(secret_key::CERT.to_string(), ByteString(cert_pem.clone()));
                d.insert(secret_key::KEY.to_string(), ByteString(key_pem.clone()));
            }
            ClientAuth::Token(t) => {
                d.insert(
                    secret_key::TOKEN.to_string(),
                    ByteString(t.as_bytes().to_vec()),
                );
            }
        }
        d
    }

    /// From the RemoteCluster's inline `caData`, `certData` and `keyData` (upstream's way).
    pub fn from_inline(spec: &RemoteClusterSpec) -> Result<Self, String> {
        let field =
            |v: &Option<ByteString>| v.as_ref().map(|b| b.0.clone()).filter(|b| !b.is_empty());
        let (Some(ca), Some(cert), Some(key)) = (
            field(&spec.ca_data),
            field(&spec.cert_data),
            field(&spec.key_data),
        ) else {
            return Err("spec: caData, certData and keyData are all needed".into());
        };
        Ok(Self {
            ca_pem: pem("spec.caData", &ca, CERT_MARKER)?,
            auth: ClientAuth::Certificate {
                cert_pem: pem("spec.certData", &cert, CERT_MARKER)?,
                key_pem: pem("spec.keyData", &key, KEY_MARKER)?,
            },
        })
    }

    /// A kubeconfig (as JSON) for `server` with these credentials, for a client library's
    /// kubeconfig loader (which decodes and checks the PEM data).
    pub fn kubeconfig(&self, server: &str) -> serde_json::Value {
        let b64 = |d: &[u8]| serde_json::to_value(ByteString(d.to_vec())).unwrap_or_default();
        let user = match &self.auth {
            ClientAuth::Certificate { cert_pem, key_pem } => serde_json::json!({
                "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}),
            ClientAuth::Token(t) => serde_json::json!({"token": t}),
        };
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "remote", "cluster": {
                "server": server, "certificate-authority-data": b64(&self.ca_pem)}}],
            "users": [{"name": "remote", "user": user}],
            "contexts": [{"name": "remote", "context": {"cluster": "remote", "user": "remote"}}],
            "current-context": "remote"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &[u8] = b"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn certificate_and_token_round_trip_through_the_secret() {
        for auth in [
            ClientAuth::Certificate {
                cert_pem: CA.to_vec(),
                key_pem: KEY.to_vec(),
            },
            ClientAuth::Token("abc.def-123".into()),
        ] {
            let c = Credentials {
                ca_pem: CA.to_vec(),
                auth,
            };
            assert_eq!(Credentials::from_secret_data(&c.to_secret_data()), Ok(c));
        }
    }

    #[test]
    fn a_token_file_with_a_trailing_newline_is_read() {
        let c = Credentials::from_secret_data(&data(&[("ca.crt", CA), ("token", b"t0k\n")]));
        assert_eq!(c.map(|c| c.auth), Ok(ClientAuth::Token("t0k".into())));
    }

    #[test]
    fn bad_secrets_are_refused_naming_the_key() {
        for (d, want) in [
            (data(&[]), "\"ca.crt\" (the CA bundle) is missing"),
            (
                data(&[("ca.crt", b"")]),
                "\"ca.crt\" (the CA bundle) is missing",
            ),
            (data(&[("ca.crt", b"hello")]), "key \"ca.crt\" is not PEM"),
            (data(&[("ca.crt", CA)]), "has neither"),
            (data(&[("ca.crt", CA), ("tls.crt", CA)]), "needs both"),
            (data(&[("ca.crt", CA), ("tls.key", KEY)]), "needs both"),
            (
                data(&[
                    ("ca.crt", CA),
                    ("tls.crt", CA),
                    ("tls.key", KEY),
                    ("token", b"t"),
                ]),
                "keep one",
            ),
            (
                data(&[("ca.crt", CA), ("tls.crt", KEY), ("tls.key", KEY)]),
                "key \"tls.crt\" is not PEM",
            ),
            (
                data(&[("ca.crt", CA), ("tls.crt", CA), ("tls.key", CA)]),
                "key \"tls.key\" is not PEM",
            ),
            (data(&[("ca.crt", CA), ("token", b"a b")]), "whitespace"),
            (
                data(&[("ca.crt", CA), ("token", b"a\r\nX-Evil: 1")]),
                "whitespace",
            ),
            (
                data(&[("ca.crt", CA), ("token", &[0xff, 0xfe])]),
                "not UTF-8",
            ),
            (
                data(&[("ca.crt", CA), ("token", &[b'a'; 20_000])]),
                "16 KiB",
            ),
        ] {
            match Credentials::from_secret_data(&d) {
                Err(e) => assert!(e.contains(want), "{d:?}: {e}"),
                Ok(c) => panic!("{d:?} accepted: {c:?}"),
            }
        }
    }

    #[test]
    fn inline_fields_need_all_three_pem_values() {
        let mut spec = RemoteClusterSpec {
            ca_data: Some(ByteString(CA.to_vec())),
            cert_data: Some(ByteString(CA.to_vec())),
            key_data: Some(ByteString(KEY.to_vec())),
            ..Default::default()
        };
        assert!(Credentials::from_inline(&spec).is_ok());
        spec.key_data = Some(ByteString(b"nope".to_vec()));
        let e = Credentials::from_inline(&spec).unwrap_err();
        assert!(e.contains("spec.keyData is not PEM"), "{e}");
        spec.key_data = None;
        let e = Credentials::from_inline(&spec).unwrap_err();
        assert!(e.contains("all needed"), "{e}");
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let c = Credentials {
            ca_pem: CA.to_vec(),
            auth: ClientAuth::Token("s3cret".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("BEGIN"),
            "{shown}"
        );
    }

    #[test]
    fn the_kubeconfig_carries_the_credentials() {
        let c = Credentials {
            ca_pem: CA.to_vec(),
            auth: ClientAuth::Token("tok".into()),
        };
        let k = c.kubeconfig("https://198.18.0.1:6443");
        assert_eq!(k["users"][0]["user"]["token"], "tok");
        assert_eq!(
            k["clusters"][0]["cluster"]["server"],
            "https://198.18.0.1:6443"
        );
        let ca = k["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        let back: ByteString = serde_json::from_value(serde_json::json!(ca)).unwrap();
        assert_eq!(back.0, CA);
    }
}
