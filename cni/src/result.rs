//! The ADD result: one model (spec 1.1 fields) printed in the shape of the caller's version.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::version::CniVersion;
use hybridnet_rules::prefix::{Cidr, interface_serde};

/// An interface the plugin created. `sandbox` is the netns path for container-side interfaces
/// and `None` for host-side ones (chained `bandwidth` looks for the host side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address assigned to an interface (index into `interfaces`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The interface address (`10.0.0.5/24`: host bits kept).
    #[serde(with = "interface_serde")]
    pub address: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route the plugin installed in the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(with = "interface_serde")]
    pub dst: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings (hybridnet sets none; kubelet writes resolv.conf itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The result of ADD (and what CHECK compares against).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// The result exactly as spec `version` spells it.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), json!(i.name));
                m.insert("mac".into(), json!(i.mac));
                if version.has_v1_1_fields()
                    && let Some(mtu) = i.mtu
                {
                    m.insert("mtu".into(), json!(mtu));
                }
                if let Some(s) = &i.sandbox {
                    m.insert("sandbox".into(), json!(s));
                }
                Value::Object(m)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if version.ips_carry_version() {
                    let fam = if ip.address.is_ipv4() { "4" } else { "6" };
                    m.insert("version".into(), json!(fam));
                }
                if let Some(idx) = ip.interface {
                    m.insert("interface".into(), json!(idx));
                }
                m.insert("address".into(), json!(ip.address.interface().to_string()));
                if let Some(gw) = ip.gateway {
                    m.insert("gateway".into(), json!(gw.to_string()));
                }
                Value::Object(m)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("dst".into(), json!(r.dst.interface().to_string()));
                if let Some(gw) = r.gw {
                    m.insert("gw".into(), json!(gw.to_string()));
                }
                Value::Object(m)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        out.insert("interfaces".into(), Value::Array(interfaces));
        out.insert("ips".into(), Value::Array(ips));
        out.insert("routes".into(), Value::Array(routes));
        out.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).unwrap_or_else(|_| json!({})),
        );
        Value::Object(out)
    }

    /// Container-side addresses (without prefix length), sorted.
    pub fn container_ips(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_none_or(|i| i.sandbox.is_some())
            })
            .map(|ip| ip.address.addr())
            .collect();
        v.sort();
        v
    }
}

/// The addresses of a `prevResult` of any version (CHECK compares them with the live state).
/// Returns `Err` naming the field when the shape is not a CNI result.
pub fn prev_result_ips(prev: &Value) -> Result<Vec<IpAddr>, String> {
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("prevResult.ips is not a list".into()),
    };
    let mut out = Vec::with_capacity(ips.len());
    for (i, ip) in ips.iter().enumerate() {
        let addr = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("prevResult.ips[{i}].address is missing"))?;
        let p = Cidr::parse_any(addr).map_err(|e| format!("prevResult.ips[{i}].address: {e}"))?;
        out.push(p.addr());
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "hybr0123456789a".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    mtu: Some(1450),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:c6:12:00:05".into(),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/p".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "198.18.0.5/32".parse().unwrap(),
                    gateway: Some("169.254.1.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/128".parse().unwrap(),
                    gateway: Some("fe80::ecee:eeff:feee:eeee".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn v031_ips_carry_version_and_no_mtu() {
        let j = sample().to_json(CniVersion::V0_3_1);
        assert_eq!(j["cniVersion"], "0.3.1");
        assert_eq!(j["ips"][0]["version"], "4");
        assert_eq!(j["ips"][1]["version"], "6");
        assert_eq!(j["ips"][0]["interface"], 1);
        assert!(j["interfaces"][0].get("mtu").is_none());
        assert!(j["interfaces"][0].get("sandbox").is_none());
        assert_eq!(j["interfaces"][1]["sandbox"], "/var/run/netns/p");
        assert_eq!(j["dns"], json!({}));
    }

    #[test]
    fn v100_has_no_ip_version_v110_has_mtu() {
        let j = sample().to_json(CniVersion::V1_0_0);
        assert!(j["ips"][0].get("version").is_none());
        assert!(j["interfaces"][1].get("mtu").is_none());
        let j = sample().to_json(CniVersion::V1_1_0);
        assert_eq!(j["interfaces"][1]["mtu"], 1450);
        assert_eq!(
            j["routes"][0],
            json!({"dst":"0.0.0.0/0","gw":"169.254.1.1"})
        );
    }

    #[test]
    fn prev_result_round_trip_any_version() {
        let r = sample();
        for v in CniVersion::ALL {
            assert_eq!(prev_result_ips(&r.to_json(v)).unwrap(), r.container_ips());
        }
        assert!(prev_result_ips(&json!({"ips":[{"address":"x"}]})).is_err());
        assert!(prev_result_ips(&json!({"ips":5})).is_err());
        assert!(prev_result_ips(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn serde_round_trip() {
        let r = sample();
        let back: CniResult = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
