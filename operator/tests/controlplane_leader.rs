//! Leadership through the Lease, and the webhook's certificate reload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use hybridnet_api::v1::{IpVersion, NetworkType};
use hybridnet_operator::controlplane::runtime::leader::{LeaseElector, Round};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_held_by_one_identity_released_and_taken_over() {
    let env = Env::start().await;
    let d = Duration::from_secs(1);
    let mut a = LeaseElector::new(env.client.clone(), "kube-system", "l", "a", d);
    let mut b = LeaseElector::new(env.client.clone(), "kube-system", "l", "b", d);
    assert_eq!(a.round().await.unwrap(), Round::Leading);
    assert_eq!(
        b.round().await.unwrap(),
        Round::Following {
            holder: Some("a".into())
        }
    );
    assert_eq!(a.round().await.unwrap(), Round::Leading, "renewal");
    // A released Lease is taken at once.
    a.release().await.unwrap();
    assert_eq!(b.round().await.unwrap(), Round::Leading);
    assert_eq!(
        a.round().await.unwrap(),
        Round::Following {
            holder: Some("b".into())
        }
    );
    // b stops renewing: a takes over only after it saw the record unchanged for the duration.
    assert!(matches!(a.round().await.unwrap(), Round::Following { .. }));
    tokio::time::sleep(d + Duration::from_millis(100)).await;
    assert_eq!(a.round().await.unwrap(), Round::Leading);
    let lease: Lease = Api::namespaced(env.client.clone(), "kube-system")
        .get("l")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(2));
    // b's stale view cannot win a write race: its round sees a's fresh record.
    assert_eq!(
        b.round().await.unwrap(),
        Round::Following {
            holder: Some("a".into())
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lease_stops_allocation_at_once_and_a_new_term_rebuilds() {
    let env = Env::start().await;
    let r = env.replica("r1").await;
    env.node("n1", &[]).await;
    env.create_network(network("o", NetworkType::Overlay, Some(4), None))
        .await
        .unwrap();
    env.create_subnet(subnet_of("o-v4", "o", IpVersion::V4, "100.64.0.0/24", None))
        .await
        .unwrap();
    env.network_ready("o", true, false).await;
    env.pod(pod(
        "default",
        "before",
        "n1",
        &[(
            hybridnet_api::constants::annotation::NETWORK_TYPE,
            "Overlay",
        )],
    ))
    .await;
    let before = env.allocated("default", "before", 1).await;

    // Someone else takes the Lease and keeps renewing it.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    let steal = || async {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let _ = leases
            .patch(
                "hybridnet-manager-election",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 2}})),
            )
            .await;
    };
    steal().await;
    wait_for("r1 steps down", || async {
        r.metrics.encode().contains("hybridnet_leader 0")
    })
    .await;
    env.pod(pod(
        "default",
        "during",
        "n1",
        &[(
            hybridnet_api::constants::annotation::NETWORK_TYPE,
            "Overlay",
        )],
    ))
    .await;
    for _ in 0..15 {
        steal().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            env.instances_of("default", "during").await.is_empty(),
            "allocated without the Lease"
        );
    }
    // The intruder stops: r1 takes the Lease back, rebuilds the IPAM from the API and allocates
    // without reusing the address it handed out in its previous term.
    let after = env.allocated("default", "during", 1).await;
    assert_ne!(ip_of(&after[0]), ip_of(&before[0]));
    assert!(
        r.metrics
            .encode()
            .contains("hybridnet_ipam_rebuild_seconds_count 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_certificate_is_reloaded_from_files() {
    let env = Env::start().await;
    let r = env.replica_with(test_config("r1"), false).await;
    let url = format!("https://{}/healthz", r.webhook_addr.unwrap());
    let review = json!({});
    // Trusting the first CA works; a second CA is not trusted yet.
    let fresh = make_certs();
    // A TLS failure is reported as "tls: ..."; anything else means the handshake succeeded.
    let tls_refused =
        |r: &Result<serde_json::Value, String>| matches!(r, Err(e) if e.starts_with("tls:"));
    let old_ok = kube_lite::admission::post_json(&url, env.certs.ca_pem.as_bytes(), &review).await;
    assert!(!tls_refused(&old_ok), "{old_ok:?}");
    let new_before = kube_lite::admission::post_json(&url, fresh.ca_pem.as_bytes(), &review).await;
    assert!(tls_refused(&new_before), "{new_before:?}");
    // Rotate the files: the server picks the new pair up.
    std::fs::write(env.cert_dir.path().join("tls.key"), &fresh.key_pem).unwrap();
    std::fs::write(env.cert_dir.path().join("tls.crt"), &fresh.cert_pem).unwrap();
    wait_for("new certificate served", || async {
        !tls_refused(&kube_lite::admission::post_json(&url, fresh.ca_pem.as_bytes(), &review).await)
    })
    .await;
    // The old CA is not trusted any more.
    let old_after =
        kube_lite::admission::post_json(&url, env.certs.ca_pem.as_bytes(), &review).await;
    assert!(tls_refused(&old_after), "{old_after:?}");
    // Readiness follows the caches.
    r.caches.wait_ready().await;
    assert!(r.caches.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_certificate_is_reloaded_from_a_secret() {
    use hybridnet_operator::controlplane::runtime::replica::{Replica, ReplicaConfig};
    use hybridnet_operator::webhook::server::CertSource;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;

    let env = Env::start().await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "kube-system");
    let secret = |c: &TestCerts| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("hybridnet-webhook-cert".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (
                    "tls.crt".to_string(),
                    ByteString(c.cert_pem.clone().into_bytes()),
                ),
                (
                    "tls.key".to_string(),
                    ByteString(c.key_pem.clone().into_bytes()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret(&env.certs))
        .await
        .unwrap();
    let r = Replica::start(
        env.srv.client().await.unwrap(),
        ReplicaConfig {
            control: test_config("r1"),
            webhook: Some((
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                CertSource::Secret {
                    namespace: "kube-system".into(),
                    name: "hybridnet-webhook-cert".into(),
                },
            )),
            cert_reload: Duration::from_millis(200),
            metrics_addr: None,
            control_plane: false,
        },
        None,
    )
    .await
    .unwrap();
    let url = format!("https://{}/validate", r.webhook_addr.unwrap());
    let tls_refused =
        |r: &Result<serde_json::Value, String>| matches!(r, Err(e) if e.starts_with("tls:"));
    let first =
        kube_lite::admission::post_json(&url, env.certs.ca_pem.as_bytes(), &json!({})).await;
    assert!(!tls_refused(&first), "{first:?}");
    let fresh = make_certs();
    secrets
        .replace("hybridnet-webhook-cert", &PostParams::default(), &{
            let mut s = secret(&fresh);
            s.metadata.resource_version = secrets
                .get("hybridnet-webhook-cert")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    wait_for("certificate from the updated Secret served", || async {
        !tls_refused(
            &kube_lite::admission::post_json(&url, fresh.ca_pem.as_bytes(), &json!({})).await,
        )
    })
    .await;
    // A Secret without a key is refused at start with an error naming it.
    let mut broken = secret(&fresh);
    broken.metadata.name = Some("broken".into());
    broken.data.as_mut().unwrap().remove("tls.key");
    secrets
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    let err = Replica::start(
        env.srv.client().await.unwrap(),
        ReplicaConfig {
            control: test_config("r2"),
            webhook: Some((
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                CertSource::Secret {
                    namespace: "kube-system".into(),
                    name: "broken".into(),
                },
            )),
            cert_reload: Duration::from_millis(200),
            metrics_addr: None,
            control_plane: false,
        },
        None,
    )
    .await
    .err()
    .expect("a Secret without tls.key must be refused");
    assert!(
        err.to_string().contains("kube-system/broken") && err.to_string().contains("tls.key"),
        "{err}"
    );
}
