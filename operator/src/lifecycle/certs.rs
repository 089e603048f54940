//! The webhook's CA and serving certificate: generated with rcgen (ring), kept in the Secret
//! `hybridnet-webhook-cert` (`ca.crt`, `tls.crt`, `tls.key`), injected as `caBundle` and rotated
//! when within [`ROTATE_BEFORE`] of expiry.
//!
//! On rotation the new CA is put in front of the previous one in `ca.crt` (while the previous is
//! still valid), so API servers keep trusting the serving certificate the webhook server still
//! holds until it reloads the Secret.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Rotate when the certificate or the CA expires within this period.
pub const ROTATE_BEFORE: Duration = Duration::days(30);
/// Lifetime of the serving certificate.
pub const SERVING_LIFETIME: Duration = Duration::days(365);
/// Lifetime of the CA (longer than one serving certificate, renewed together with it).
pub const CA_LIFETIME: Duration = Duration::days(2 * 365);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Secret key {key}: {message}")]
    Parse { key: &'static str, message: String },
}

/// The DNS names of the webhook Service that the serving certificate covers.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// The PEM material kept in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    /// PEM of the current CA, followed by the previous CA during a rotation.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertBundle {
    /// The Secret `data` map.
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (
                super::names::SECRET_CA.to_string(),
                self.ca_pem.clone().into_bytes(),
            ),
            (
                super::names::SECRET_CERT.to_string(),
                self.cert_pem.clone().into_bytes(),
            ),
            (
                super::names::SECRET_KEY.to_string(),
                self.key_pem.clone().into_bytes(),
            ),
        ])
    }

    /// Reads the Secret `data` map; `None` when a key is missing or empty.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Option<CertBundle> {
        let get = |k: &str| {
            data.get(k)
                .filter(|v| !v.is_empty())
                .and_then(|v| String::from_utf8(v.clone()).ok())
        };
        Some(CertBundle {
            ca_pem: get(super::names::SECRET_CA)?,
            cert_pem: get(super::names::SECRET_CERT)?,
            key_pem: get(super::names::SECRET_KEY)?,
        })
    }
}

/// What a certificate in the Secret says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    pub not_before: i64,
    pub not_after: i64,
    pub dns_names: Vec<String>,
}

fn parse_pem_certs(pem: &str, key: &'static str) -> Result<Vec<CertFacts>, CertError> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = item.map_err(|e| CertError::Parse {
            key,
            message: format!("not PEM: {e}"),
        })?;
        let cert = p.parse_x509().map_err(|e| CertError::Parse {
            key,
            message: format!("not an X.509 certificate: {e}"),
        })?;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    dns_names.push(d.to_string());
                }
            }
        }
        out.push(CertFacts {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            dns_names,
        });
    }
    if out.is_empty() {
        return Err(CertError::Parse {
            key,
            message: "no certificate found".into(),
        });
    }
    Ok(out)
}

/// Facts of the serving certificate and of the current (first) CA in a bundle.
pub fn inspect(bundle: &CertBundle) -> Result<(CertFacts, CertFacts), CertError> {
    let cert = parse_pem_certs(&bundle.cert_pem, super::names::SECRET_CERT)?.swap_remove(0);
    let ca = parse_pem_certs(&bundle.ca_pem, super::names::SECRET_CA)?.swap_remove(0);
    KeyPair::from_pem(&bundle.key_pem).map_err(|e| CertError::Parse {
        key: super::names::SECRET_KEY,
        message: format!("not a PEM private key: {e}"),
    })?;
    Ok((cert, ca))
}

/// What to do with the certificate in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertDecision {
    Keep,
    /// Generate a new CA and certificate, with the reason (for logs and Events).
    Issue(String),
}

/// Pure rotation decision at time `now` (unix seconds).
pub fn decide(existing: Option<&CertBundle>, dns_names: &[String], now: i64) -> CertDecision {
    let Some(bundle) = existing else {
        return CertDecision::Issue("no certificate yet".into());
    };
    let (cert, ca) = match inspect(bundle) {
        Ok(f) => f,
        Err(e) => return CertDecision::Issue(format!("unusable certificate ({e})")),
    };
    decide_from_facts(&cert, &ca, dns_names, now)
}

/// The decision on parsed facts.
pub fn decide_from_facts(
    cert: &CertFacts,
    ca: &CertFacts,
    dns_names: &[String],
    now: i64,
) -> CertDecision {
    if let Some(missing) = dns_names.iter().find(|n| !cert.dns_names.contains(n)) {
        return CertDecision::Issue(format!("certificate does not cover {missing}"));
    }
    if cert.not_before > now || ca.not_before > now {
        return CertDecision::Issue("certificate is not valid yet".into());
    }
    let horizon = now + ROTATE_BEFORE.whole_seconds();
    let expiry = cert.not_after.min(ca.not_after);
    if expiry <= horizon {
        let days = (expiry - now).div_euclid(86_400);
        return CertDecision::Issue(format!(
            "certificate expires in {days} days (rotation {} days before expiry)",
            ROTATE_BEFORE.whole_days()
        ));
    }
    CertDecision::Keep
}

/// Issues a new CA and serving certificate valid from `now`. `previous` is the bundle being
/// replaced: its current CA stays trusted in `ca.crt` while it has not expired.
pub fn issue(
    dns_names: &[String],
    now: OffsetDateTime,
    previous: Option<&CertBundle>,
) -> Result<CertBundle, CertError> {
    // A little slack for clocks that run behind ours.
    let not_before = now - Duration::minutes(5);

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::CommonName, "hybridnet-webhook-ca");
    ca_dn.push(DnType::OrganizationName, "hybridnet");
    ca_params.distinguished_name = ca_dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = now + CA_LIFETIME;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names
            .get(2)
            .cloned()
            .unwrap_or_else(|| "hybridnet-webhook".into()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = now + SERVING_LIFETIME;
    let cert = params.signed_by(&key, &issuer)?;

    let mut ca_pem = ca_cert.pem();
    if let Some(prev) = previous
        && let Some(old_ca) = first_valid_pem_cert(&prev.ca_pem, now.unix_timestamp())
    {
        ca_pem.push_str(&old_ca);
    }
    Ok(CertBundle {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The first PEM certificate block of `pem` if it parses and has not expired at `now`.
fn first_valid_pem_cert(pem: &str, now: i64) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = pem.find(END)? + END.len();
    let block = format!("{}\n", pem[..end].trim_start());
    let facts = parse_pem_certs(&block, super::names::SECRET_CA).ok()?;
    (facts.first()?.not_after > now).then_some(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        service_dns_names("hybridnet-webhook", "hybridnet-system")
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
    }

    #[test]
    fn dns_names_cover_every_service_form() {
        assert_eq!(
            names(),
            vec![
                "hybridnet-webhook",
                "hybridnet-webhook.hybridnet-system",
                "hybridnet-webhook.hybridnet-system.svc",
                "hybridnet-webhook.hybridnet-system.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn issued_certificate_is_signed_for_the_service_and_kept_until_30_days_before_expiry() {
        let b = issue(&names(), t0(), None).unwrap();
        let (cert, ca) = inspect(&b).unwrap();
        assert_eq!(cert.dns_names, names());
        assert_eq!(cert.not_after, (t0() + SERVING_LIFETIME).unix_timestamp());
        assert_eq!(ca.not_after, (t0() + CA_LIFETIME).unix_timestamp());
        let now = t0().unix_timestamp();
        assert_eq!(decide(Some(&b), &names(), now), CertDecision::Keep);
        // One second before the 30-day window: keep; inside it: rotate.
        let window_start = cert.not_after - ROTATE_BEFORE.whole_seconds();
        assert_eq!(
            decide(Some(&b), &names(), window_start - 1),
            CertDecision::Keep
        );
        assert!(matches!(
            decide(Some(&b), &names(), window_start),
            CertDecision::Issue(r) if r.contains("expires in 30 days")
        ));
        assert!(matches!(
            decide(Some(&b), &names(), cert.not_after + 10),
            CertDecision::Issue(_)
        ));
    }

    /// A real TLS 1.3 handshake (rustls, ring) in memory: the server presents `tls.crt`/`tls.key`,
    /// the client trusts only `ca_bundle` and checks the name, as an API server calling the webhook.
    fn handshake(server: &CertBundle, ca_bundle: &str, name: &str) -> Result<(), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
        let key =
            PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_bundle.as_bytes()) {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let sn = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(client_cfg), sn)
            .map_err(|e| e.to_string())?;
        let mut srv = rustls::ServerConnection::new(std::sync::Arc::new(server_cfg))
            .map_err(|e| e.to_string())?;
        for _ in 0..10 {
            if !client.is_handshaking() && !srv.is_handshaking() {
                return Ok(());
            }
            let mut buf = Vec::new();
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
            srv.read_tls(&mut buf.as_slice())
                .map_err(|e| e.to_string())?;
            srv.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
            let mut back = Vec::new();
            srv.write_tls(&mut back).map_err(|e| e.to_string())?;
            client
                .read_tls(&mut back.as_slice())
                .map_err(|e| e.to_string())?;
            client
                .process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        Err("handshake did not finish".into())
    }

    #[test]
    fn api_servers_trusting_the_ca_bundle_accept_the_serving_certificate() {
        let b = issue(&names(), OffsetDateTime::now_utc(), None).unwrap();
        for n in names() {
            handshake(&b, &b.ca_pem, &n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        let wrong = handshake(&b, &b.ca_pem, "hybridnet-webhook.other.svc").unwrap_err();
        assert!(wrong.contains("client"), "{wrong}");
        let other = issue(&names(), OffsetDateTime::now_utc(), None).unwrap();
        assert!(
            handshake(&b, &other.ca_pem, &names()[2]).is_err(),
            "foreign CA accepted"
        );
    }

    #[test]
    fn after_rotation_the_bundle_trusts_both_the_old_and_the_new_certificate() {
        let now = OffsetDateTime::now_utc();
        let old = issue(&names(), now - Duration::days(340), None).unwrap();
        let new = issue(&names(), now, Some(&old)).unwrap();
        // The webhook server may still serve the old certificate until it reloads the Secret.
        handshake(&old, &new.ca_pem, &names()[2]).unwrap();
        handshake(&new, &new.ca_pem, &names()[2]).unwrap();
        // Without the previous CA the old certificate would be refused.
        let fresh = issue(&names(), now, None).unwrap();
        assert!(handshake(&old, &fresh.ca_pem, &names()[2]).is_err());
    }

    #[test]
    fn missing_garbled_or_foreign_certificates_are_reissued() {
        assert!(matches!(decide(None, &names(), 0), CertDecision::Issue(_)));
        let good = issue(&names(), t0(), None).unwrap();
        let now = t0().unix_timestamp();
        let garbled = CertBundle {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ..good.clone()
        };
        assert!(
            matches!(decide(Some(&garbled), &names(), now), CertDecision::Issue(r) if r.contains("tls.crt"))
        );
        let bad_key = CertBundle {
            key_pem: "not a key".into(),
            ..good.clone()
        };
        assert!(
            matches!(decide(Some(&bad_key), &names(), now), CertDecision::Issue(r) if r.contains("tls.key"))
        );
        let empty_ca = CertBundle {
            ca_pem: String::new(),
            ..good.clone()
        };
        assert!(
            matches!(decide(Some(&empty_ca), &names(), now), CertDecision::Issue(r) if r.contains("ca.crt"))
        );
        // The namespace changed: the certificate no longer covers the Service.
        let other = service_dns_names("hybridnet-webhook", "kube-system");
        assert!(
            matches!(decide(Some(&good), &other, now), CertDecision::Issue(r) if r.contains("does not cover"))
        );
        // Issued in the future (clock skew) is not trusted.
        assert!(matches!(
            decide(Some(&good), &names(), now - 3600),
            CertDecision::Issue(r) if r.contains("not valid yet")
        ));
    }

    #[test]
    fn an_expiring_ca_forces_rotation_even_if_the_leaf_is_fresh() {
        let leaf = CertFacts {
            not_before: 0,
            not_after: 1_000 * 86_400,
            dns_names: names(),
        };
        let ca = CertFacts {
            not_before: 0,
            not_after: 40 * 86_400,
            dns_names: vec![],
        };
        assert_eq!(
            decide_from_facts(&leaf, &ca, &names(), 9 * 86_400),
            CertDecision::Keep
        );
        assert!(matches!(
            decide_from_facts(&leaf, &ca, &names(), 10 * 86_400),
            CertDecision::Issue(_)
        ));
    }

    #[test]
    fn rotation_keeps_the_previous_ca_trusted_and_drops_expired_ones() {
        let first = issue(&names(), t0(), None).unwrap();
        let later = t0() + SERVING_LIFETIME - Duration::days(10);
        let second = issue(&names(), later, Some(&first)).unwrap();
        let cas = parse_pem_certs(&second.ca_pem, "ca.crt").unwrap();
        assert_eq!(cas.len(), 2, "new CA followed by the previous one");
        assert_eq!(cas[0].not_after, (later + CA_LIFETIME).unix_timestamp());
        assert_eq!(cas[1].not_after, (t0() + CA_LIFETIME).unix_timestamp());
        // Once the first CA has expired, a further rotation carries only one previous CA.
        let much_later = t0() + CA_LIFETIME + Duration::days(1);
        let third = issue(&names(), much_later, Some(&second)).unwrap();
        let cas = parse_pem_certs(&third.ca_pem, "ca.crt").unwrap();
        assert_eq!(cas.len(), 2);
        assert_eq!(cas[1].not_after, (later + CA_LIFETIME).unix_timestamp());
        let expired_prev = issue(&names(), much_later + CA_LIFETIME, Some(&third)).unwrap();
        assert_eq!(
            parse_pem_certs(&expired_prev.ca_pem, "ca.crt")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn secret_data_round_trips_and_refuses_missing_keys() {
        let b = issue(&names(), t0(), None).unwrap();
        let data = b.to_secret_data();
        assert_eq!(
            data.keys().cloned().collect::<Vec<_>>(),
            vec!["ca.crt", "tls.crt", "tls.key"]
        );
        assert_eq!(CertBundle::from_secret_data(&data), Some(b));
        let mut partial = data.clone();
        partial.remove("tls.key");
        assert_eq!(CertBundle::from_secret_data(&partial), None);
        let mut empty = data.clone();
        empty.insert("tls.crt".into(), vec![]);
        assert_eq!(CertBundle::from_secret_data(&empty), None);
        let mut binary = data;
        binary.insert("tls.key".into(), vec![0xff, 0xfe, 0x00]);
        assert_eq!(CertBundle::from_secret_data(&binary), None);
    }
}
