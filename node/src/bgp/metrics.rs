//! BGP metrics, read from the speaker at scrape time (no polling task, never stale).

use std::sync::Arc;

use hybridnet_bgp::State;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::controller::BgpState;

type Labels = Vec<(String, String)>;

const STATES: [State; 6] = [
    State::Idle,
    State::Connect,
    State::Active,
    State::OpenSent,
    State::OpenConfirm,
    State::Established,
];

/// Registered in the agent's registry (`Registry::register_collector`).
#[derive(Debug, Clone)]
pub struct BgpCollector {
    state: Arc<BgpState>,
}

impl BgpCollector {
    pub fn new(state: Arc<BgpState>) -> Self {
        BgpCollector { state }
    }
}

fn emit<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &M,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

impl Collector for BgpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(speaker) = self.state.speaker() else {
            return Ok(());
        };
        let peers = speaker.peer_states();
        let state = Family::<Labels, Gauge>::default();
        let announced = Family::<Labels, Gauge>::default();
        let flaps = Family::<Labels, Counter>::default();
        let collisions = Family::<Labels, Counter>::default();
        for p in &peers {
            let peer = ("peer".to_string(), p.address.to_string());
            for s in STATES {
                state
                    .get_or_create(&vec![
                        peer.clone(),
                        ("asn".into(), p.asn.to_string()),
                        ("state".into(), s.as_str().into()),
                    ])
                    .set(i64::from(p.state == s));
            }
            announced
                .get_or_create(&vec![peer.clone()])
                .set(p.prefixes_announced as i64);
            flaps.get_or_create(&vec![peer.clone()]).inc_by(p.flaps);
            collisions.get_or_create(&vec![peer]).inc_by(p.collisions);
        }
        emit(
            &mut encoder,
            "bgp_session_state",
            "BGP session state per peer (1 for the current state)",
            &state,
        )?;
        emit(
            &mut encoder,
            "bgp_prefixes_announced",
            "Prefixes in the Adj-RIB-Out of each peer",
            &announced,
        )?;
        emit(
            &mut encoder,
            "bgp_session_flaps",
            "Times a BGP session left Established",
            &flaps,
        )?;
        emit(
            &mut encoder,
            "bgp_connection_collisions",
            "Connections closed by BGP connection collision resolution (RFC 4271 6.8)",
            &collisions,
        )?;
        let refused = Counter::<u64>::default();
        refused.inc_by(speaker.refused_connections());
        emit(
            &mut encoder,
            "bgp_inbound_refused",
            "Inbound BGP connections refused (source not a configured peer)",
            &refused,
        )?;
        let desired = Gauge::<i64>::default();
        desired.set(speaker.routes().len() as i64);
        emit(
            &mut encoder,
            "bgp_desired_routes",
            "Routes this node wants announced",
            &desired,
        )?;
        let ready = Gauge::<i64>::default();
        ready.set(i64::from(speaker.required_peers_established()));
        emit(
            &mut encoder,
            "bgp_required_peers_established",
            "1 when every peer without allowNotEstablished is Established",
            &ready,
        )
    }
}
