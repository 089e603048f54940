//! The effective installation settings: the HybridnetCluster spec with every default filled in and
//! every value checked. Invalid specs are refused here with the field named, so nothing is applied
//! from them (the reconciler reports them as `Degraded`, reason `InvalidSpec`).

use std::net::IpAddr;
use std::time::Duration;

use hybridnet_api::names as k8s_names;
use hybridnet_api::operator::{
    FailurePolicy, HybridnetClusterSpec, ImagePullPolicy, IpFamily, values,
};
use hybridnet_api::v1::{AddressRange, IpVersion, NetworkType};
use hybridnet_api::{FieldError, FieldErrors};
use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names;

pub const DEFAULT_HEALTH_PORT: i32 = 11021;
pub const DEFAULT_METRICS_PORT: i32 = 9101;
pub const DEFAULT_VXLAN_UDP_PORT: i32 = 8472;
pub const DEFAULT_WEBHOOK_PORT: i32 = 9898;
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_CONFLIST: &str = "06-hybridnet.conflist";
pub const DEFAULT_CHAINED_PLUGINS: [&str; 2] = ["bandwidth", "portmap"];
pub const DEFAULT_BOOTSTRAP_NAME: &str = "init";
pub const DEFAULT_BOOTSTRAP_VNI: i32 = 4;
/// Longest `spec.nodeAgent.vlanCheckTimeout`: the agent refuses a longer `--vlan-check-timeout`
/// (the CNI plugin gives the whole ADD 60 s).
pub const MAX_VLAN_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `spec.nodeAgent.vlanCheckTimeout` string (the CRD's maxLength).
const MAX_DURATION_LEN: usize = 32;

/// Every setting the renderer needs, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub namespace: String,
    /// Operand version (no leading `v`).
    pub version: String,
    pub operator_version: String,
    pub image: String,
    pub image_pull_policy: ImagePullPolicy,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub default_network_type: NetworkType,
    pub default_ip_family: IpFamily,
    pub max_unavailable: IntOrString,
    pub prefer_vlan_interfaces: Vec<String>,
    pub prefer_vxlan_interfaces: Vec<String>,
    pub prefer_bgp_interfaces: Vec<String>,
    pub vxlan_udp_port: i32,
    pub health_port: i32,
    pub metrics_port: i32,
    pub resources: Option<ResourceRequirements>,
    pub extra_tolerations: Vec<Toleration>,
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// `--vlan-check-timeout`, whole milliseconds; `None` leaves the agent's default (3 s).
    pub vlan_check_timeout: Option<Duration>,
    /// `--enable-vlan-arp-enhancement`; `None` leaves the agent's default (true).
    pub enable_vlan_arp_enhancement: Option<bool>,
    /// `--check-pod-connectivity-from-host`; `None` leaves the agent's default (true).
    pub check_pod_connectivity_from_host: Option<bool>,
    /// `--vtep-address-cidrs`, canonical CIDRs; empty leaves the agent's default (any address).
    pub vtep_address_cidrs: Vec<String>,
    /// `--update-ipinstance-status`; `None` leaves the agent's default (true).
    pub update_ipinstance_status: Option<bool>,
    /// `--remove-upstream-leftovers`; `None` leaves the agent's default (true).
    pub remove_upstream_leftovers: Option<bool>,
    /// `--remove-felix-leftovers`; `None` leaves the agent's default (false).
    pub remove_felix_leftovers: Option<bool>,
    /// Extra objectSelector expressions of the Pod webhooks (after the ignore-label rule).
    pub pod_match_expressions: Vec<LabelSelectorRequirement>,
    /// Upstream's `VMIPRetain` feature gate (the control plane reads it from the object itself,
    /// `operator/src/controlplane/rules/defaults.rs`).
    pub vm_ip_retain: bool,
    pub bin_dir: String,
    pub conf_dir: String,
    pub conflist_name: String,
    pub chained_plugins: Vec<String>,
    pub mtu: Option<i32>,
    pub pod_failure_policy: FailurePolicy,
    pub webhook_port: i32,
    pub bootstrap: Option<Bootstrap>,
}

/// The bootstrap overlay Network and Subnet.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    pub name: String,
    pub vxlan_id: i32,
    pub range: AddressRange,
}

/// A Linux interface name: 1..=15 bytes, no `/`, whitespace, `:` or `,` (the agent flag separator).
fn check_interface(name: &str, field: &str, errs: &mut FieldErrors) {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':' && b != b',');
    if !ok {
        errs.push(FieldError::new(
            field,
            format!("{name:?} is not a Linux interface name (1-15 visible characters, no '/', ':' or ',')"),
        ));
    }
}

/// An absolute host directory without `..`, not `/` itself, made of safe characters.
fn check_host_dir(dir: &str, field: &str, errs: &mut FieldErrors) {
    // The CRD's CEL rules say the same (`hybridnet_api::operator::hostdir`); this also covers a
    // spec stored before they existed.
    if let Err(why) = hybridnet_api::operator::hostdir::check(dir) {
        errs.push(FieldError::new(field, format!("{}: {why}", shown(dir))));
    }
}

/// A user value in an error message: quoted with control characters escaped, cut after 40
/// characters so a hostile megabyte string does not become a megabyte condition message.
fn shown(v: &str) -> String {
    match v.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}...", &v[..cut]),
        None => format!("{v:?}"),
    }
}

/// Parses `spec.nodeAgent.vlanCheckTimeout`: `0`, or one or more `<digits>[.<digits>]<unit>` with
/// unit `ms`, `s`, `m` or `h` (`3s`, `500ms`, `1m30s`, `1.5s`), in whole milliseconds, at most
/// [`MAX_VLAN_CHECK_TIMEOUT`]. The grammar is the CRD pattern and a subset of what the agent's
/// `--vlan-check-timeout` parser takes; exact integer arithmetic, so `0.1s` is 100 ms and never
/// rounds to a different value.
pub fn parse_vlan_check_timeout(v: &str) -> Result<Duration, String> {
    let not_a_duration = || {
        format!(
            "{} is not a duration such as 3s, 500ms or 1m30s (units ms, s, m, h; 0 disables the checks)",
            shown(v)
        )
    };
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    if v.is_empty() || v.len() > MAX_DURATION_LEN {
        return Err(not_a_duration());
    }
    let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut rest = v.as_bytes();
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let int_len = digits(rest);
        if int_len == 0 {
            return Err(not_a_duration());
        }
        let (int_part, tail) = rest.split_at(int_len);
        let (frac_part, tail) = match tail.strip_prefix(b".") {
            Some(t) => {
                let n = digits(t);
                if n == 0 {
                    return Err(not_a_duration());
                }
                t.split_at(n)
            }
            None => (&[][..], tail),
        };
        let (scale_ms, tail): (u128, &[u8]) = if let Some(t) = tail.strip_prefix(b"ms") {
            (1, t)
        } else if let Some(t) = tail.strip_prefix(b"s") {
            (1_000, t)
        } else if let Some(t) = tail.strip_prefix(b"m") {
            (60_000, t)
        } else if let Some(t) = tail.strip_prefix(b"h") {
            (3_600_000, t)
        } else {
            return Err(not_a_duration());
        };
        // At most 32 ASCII digits in all: every product below fits in u128.
        let number = |d: &[u8]| {
            d.iter()
                .fold(0u128, |acc, c| acc * 10 + u128::from(c - b'0'))
        };
        let frac_scaled = number(frac_part) * scale_ms;
        let frac_div = 10u128.pow(frac_part.len() as u32);
        if !frac_scaled.is_multiple_of(frac_div) {
            return Err(format!("{} is finer than a millisecond", shown(v)));
        }
        total_ms = total_ms
            .saturating_add(number(int_part).saturating_mul(scale_ms))
            .saturating_add(frac_scaled / frac_div);
        rest = tail;
    }
    let max_ms = MAX_VLAN_CHECK_TIMEOUT.as_millis();
    if total_ms > max_ms {
        return Err(format!(
            "{} is longer than 30s (the CNI plugin waits 60 s for the whole ADD)",
            shown(v)
        ));
    }
    // total_ms <= 30000 here.
    Ok(Duration::from_millis(total_ms as u64))
}

/// Upstream's default `webhook.additionalPodMatchExpressions` (charts/hybridnet/values.yaml):
/// kube-proxy's pods never wait for the Pod webhooks.
pub fn upstream_default_pod_match_expressions() -> Vec<LabelSelectorRequirement> {
    vec![LabelSelectorRequirement {
        key: "app".into(),
        operator: "NotIn".into(),
        values: Some(vec!["kube-proxy".into()]),
    }]
}

/// Most expressions in `spec.webhook.additionalPodMatchExpressions` (the CRD's maxItems).
pub use hybridnet_api::operator::values::MAX_POD_MATCH_EXPRESSIONS;
/// Most values of one expression.
const MAX_MATCH_VALUES: usize = hybridnet_api::operator::podmatch::MAX_VALUES as usize;

/// One label selector requirement as the API server checks a webhook's objectSelector: a label
/// key, one of the four operators, values (label values) for `In`/`NotIn` and none for
/// `Exists`/`DoesNotExist`; then the safety rule of the CRD (`hybridnet_api::operator::podmatch`:
/// only `NotIn`, not on the bypass label or a controller's label).
fn check_match_expression(r: &LabelSelectorRequirement, field: &str, errs: &mut FieldErrors) {
    let before = errs.0.len();
    if let Err(e) = k8s_names::label_key(&r.key) {
        errs.push(FieldError::new(format!("{field}.key"), e));
    }
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" | "NotIn" => {
            if values.is_empty() {
                errs.push(FieldError::new(
                    format!("{field}.values"),
                    format!("operator {} needs at least one value", r.operator),
                ));
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errs.push(FieldError::new(
                    format!("{field}.values"),
                    format!("operator {} takes no values", r.operator),
                ));
            }
        }
        other => errs.push(FieldError::new(
            format!("{field}.operator"),
            format!(
                "{} is not one of In, NotIn, Exists, DoesNotExist",
                shown(other)
            ),
        )),
    }
    if values.len() > MAX_MATCH_VALUES {
        errs.push(FieldError::new(
            format!("{field}.values"),
            format!("{} values, at most {MAX_MATCH_VALUES}", values.len()),
        ));
    }
    for (i, v) in values.iter().enumerate().take(MAX_MATCH_VALUES) {
        if let Err(e) = k8s_names::label_value(v) {
            errs.push(FieldError::new(format!("{field}.values[{i}]"), e));
        }
    }
    // A well-formed expression that would still switch the webhooks off for many pods.
    if errs.0.len() == before
        && let Err((sub, why)) = hybridnet_api::operator::podmatch::check(r)
    {
        errs.push(FieldError::new(format!("{field}.{sub}"), why));
    }
}

fn check_port(port: i32, field: &str, errs: &mut FieldErrors) {
    if !values::PORT.contains(&port) {
        errs.push(FieldError::new(
            field,
            format!("{port} is not a port (1-65535)"),
        ));
    }
}

/// `maxUnavailable`: a positive number or a percentage 1%..=100% (0 would never roll with maxSurge 0).
fn check_max_unavailable(v: &IntOrString, errs: &mut FieldErrors) {
    let field = "spec.nodeAgent.updateStrategy.maxUnavailable";
    match v {
        IntOrString::Int(n) if *n >= 1 => {}
        IntOrString::Int(n) => errs.push(FieldError::new(
            field,
            format!("{n} must be at least 1: with maxSurge 0 a rollout would never start"),
        )),
        IntOrString::String(s) => {
            let pct = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.len() <= 3 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u32>().ok());
            if !matches!(pct, Some(1..=100)) {
                errs.push(FieldError::new(
                    field,
                    format!("{s:?} is not a percentage between 1% and 100%"),
                ));
            }
        }
    }
}

/// A name the API server accepts (`hybridnet_api::names`, imported as `k8s_names`).
fn check_name(
    name: &str,
    field: &str,
    rule: fn(&str) -> Result<(), String>,
    errs: &mut FieldErrors,
) {
    if let Err(e) = rule(name) {
        errs.push(FieldError::new(field, e));
    }
}

/// Network and Subnet names are also label values (`networking.alibaba.com/network=<name>`):
/// a DNS-1123 subdomain of at most 63 characters.
fn network_name(name: &str) -> Result<(), String> {
    k8s_names::dns_subdomain(name)?;
    k8s_names::label_value(name)
}

/// Registry and repository prefix (`hybridnet_api::operator::values::is_image_prefix`).
fn check_registry(registry: &str, errs: &mut FieldErrors) {
    if !values::is_image_prefix(registry) {
        errs.push(FieldError::new(
            "spec.registry",
            format!(
                "{} is not an image registry and repository prefix such as docker.io/hybridnet",
                shown(registry)
            ),
        ));
    }
}

impl Settings {
    /// The operand image from the operator's `RELATED_IMAGE_HYBRIDNET` (OLM pins it by digest for
    /// disconnected installs) replaces the one of `spec.registry`/`spec.version`.
    pub fn with_related_image(mut self, related: Option<&str>) -> Result<Settings, FieldErrors> {
        let Some(image) = related.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(self);
        };
        if let Err(e) = names::validate_image_ref(image) {
            let mut errs = FieldErrors::default();
            errs.push(FieldError::new(
                format!(
                    "the operator's {} environment variable",
                    names::RELATED_IMAGE_ENV
                ),
                e,
            ));
            return Err(errs);
        }
        self.image = image.to_string();
        Ok(self)
    }

    /// Fills in defaults and checks every value; errors name the field.
    pub fn from_spec(
        spec: &HybridnetClusterSpec,
        operator_version: &str,
        namespace: &str,
    ) -> Result<Settings, FieldErrors> {
        let mut errs = FieldErrors::default();
        if !values::is_release_version(operator_version) {
            errs.push(FieldError::new(
                "operator version",
                format!("{operator_version:?} is not a semantic version"),
            ));
        }
        check_name(
            namespace,
            "operator namespace",
            k8s_names::dns_label,
            &mut errs,
        );
        let version = spec
            .version
            .clone()
            .unwrap_or_else(|| operator_version.to_string());
        if !values::is_release_version(&version) {
            errs.push(FieldError::new(
                "spec.version",
                format!("{version:?} is not a version such as 0.1.0"),
            ));
        }
        let registry = spec.registry.as_deref().unwrap_or(names::DEFAULT_REGISTRY);
        check_registry(registry, &mut errs);
        for (i, s) in spec.image_pull_secrets.iter().flatten().enumerate() {
            check_name(
                &s.name,
                &format!("spec.imagePullSecrets[{i}].name"),
                k8s_names::dns_subdomain,
                &mut errs,
            );
        }
        let defaults = spec.defaults.clone().unwrap_or_default();
        let agent = spec.node_agent.clone().unwrap_or_default();
        let cni = spec.cni.clone().unwrap_or_default();
        let webhook = spec.webhook.clone().unwrap_or_default();

        let max_unavailable = agent
            .update_strategy
            .as_ref()
            .and_then(|u| u.max_unavailable.clone())
            .unwrap_or(IntOrString::Int(1));
        check_max_unavailable(&max_unavailable, &mut errs);
        let lists = [
            ("preferVlanInterfaces", &agent.prefer_vlan_interfaces),
            ("preferVxlanInterfaces", &agent.prefer_vxlan_interfaces),
            ("preferBgpInterfaces", &agent.prefer_bgp_interfaces),
        ];
        for (field, list) in lists {
            for (i, name) in list.iter().flatten().enumerate() {
                check_interface(name, &format!("spec.nodeAgent.{field}[{i}]"), &mut errs);
            }
        }
        let vxlan_udp_port = agent.vxlan_udp_port.unwrap_or(DEFAULT_VXLAN_UDP_PORT);
        check_port(vxlan_udp_port, "spec.nodeAgent.vxlanUDPPort", &mut errs);
        let health_port = agent.health_port.unwrap_or(DEFAULT_HEALTH_PORT);
        check_port(health_port, "spec.nodeAgent.healthPort", &mut errs);
        let metrics_port = agent.metrics_port.unwrap_or(DEFAULT_METRICS_PORT);
        check_port(metrics_port, "spec.nodeAgent.metricsPort", &mut errs);
        if health_port == metrics_port {
            errs.push(FieldError::new(
                "spec.nodeAgent.metricsPort",
                format!("{metrics_port} is also the health port"),
            ));
        }
        let vlan_check_timeout = match agent
            .vlan_check_timeout
            .as_deref()
            .map(parse_vlan_check_timeout)
        {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                errs.push(FieldError::new("spec.nodeAgent.vlanCheckTimeout", e));
                None
            }
        };
        let vtep_address_cidrs = agent.vtep_address_cidrs.clone().unwrap_or_default();
        if agent.vtep_address_cidrs.as_ref().is_some_and(Vec::is_empty) {
            errs.push(FieldError::new(
                "spec.nodeAgent.vtepAddressCIDRs",
                "empty: leave the field out for any address, or list at least one CIDR",
            ));
        }
        if vtep_address_cidrs.len() > 32 {
            errs.push(FieldError::new(
                "spec.nodeAgent.vtepAddressCIDRs",
                format!("{} CIDRs, at most 32", vtep_address_cidrs.len()),
            ));
        }
        for (i, c) in vtep_address_cidrs.iter().enumerate().take(32) {
            // The agent's own parser (`--vtep-address-cidrs`): canonical CIDRs only.
            if let Err(e) = hybridnet_api::ipmath::Cidr::parse_canonical(c) {
                errs.push(FieldError::new(
                    format!("spec.nodeAgent.vtepAddressCIDRs[{i}]"),
                    format!("{}: {}", shown(c), shown(&e)),
                ));
            }
        }
        let bin_dir = cni
            .bin_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_BIN_DIR.into());
        check_host_dir(&bin_dir, "spec.cni.binDir", &mut errs);
        let conf_dir = cni
            .conf_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_CONF_DIR.into());
        check_host_dir(&conf_dir, "spec.cni.confDir", &mut errs);
        let conflist_name = cni
            .conflist_name
            .clone()
            .unwrap_or_else(|| DEFAULT_CONFLIST.into());
        let conflist_ok = conflist_name.len() <= 255
            && conflist_name.ends_with(".conflist")
            && conflist_name
                .as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && conflist_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !conflist_ok {
            errs.push(FieldError::new(
                "spec.cni.conflistName",
                format!("{conflist_name:?} is not a file name ending in .conflist"),
            ));
        }
        let chained_plugins = cni.chained_plugins.clone().unwrap_or_else(|| {
            DEFAULT_CHAINED_PLUGINS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        for (i, p) in chained_plugins.iter().enumerate() {
            let ok = !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
            if !ok {
                errs.push(FieldError::new(
                    format!("spec.cni.chainedPlugins[{i}]"),
                    format!("{p:?} is not a CNI plugin binary name"),
                ));
            }
        }
        if let Some(mtu) = cni.mtu
            && !values::MTU.contains(&mtu)
        {
            errs.push(FieldError::new(
                "spec.cni.mtu",
                format!("{mtu} is outside {}-{}", values::MIN_MTU, values::MAX_MTU),
            ));
        }
        let webhook_port = webhook.port.unwrap_or(DEFAULT_WEBHOOK_PORT);
        check_port(webhook_port, "spec.webhook.port", &mut errs);
        let pod_match_expressions = webhook
            .additional_pod_match_expressions
            .clone()
            .unwrap_or_else(upstream_default_pod_match_expressions);
        if pod_match_expressions.len() > MAX_POD_MATCH_EXPRESSIONS {
            errs.push(FieldError::new(
                "spec.webhook.additionalPodMatchExpressions",
                format!(
                    "{} expressions, at most {MAX_POD_MATCH_EXPRESSIONS}",
                    pod_match_expressions.len()
                ),
            ));
        }
        for (i, r) in pod_match_expressions
            .iter()
            .enumerate()
            .take(MAX_POD_MATCH_EXPRESSIONS)
        {
            check_match_expression(
                r,
                &format!("spec.webhook.additionalPodMatchExpressions[{i}]"),
                &mut errs,
            );
        }
        let features = spec.features.clone().unwrap_or_default();
        // Switching these off is not implemented: refused, so a spec never claims a behaviour
        // the cluster does not have.
        let always_on = [
            (
                "networkUnavailableTaint",
                features.network_unavailable_taint,
            ),
            ("leakRepair", features.leak_repair),
            ("bgp", features.bgp),
        ];
        for (field, value) in always_on {
            if value == Some(false) {
                errs.push(FieldError::new(
                    format!("spec.features.{field}"),
                    "switching this feature off is not implemented (docs/api.md); set it to true or leave it out",
                ));
            }
        }

        let bootstrap = match &spec.bootstrap {
            None => None,
            Some(b) => {
                let name = b
                    .name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BOOTSTRAP_NAME.into());
                check_name(&name, "spec.bootstrap.name", network_name, &mut errs);
                let vxlan_id = b.vxlan_id.unwrap_or(DEFAULT_BOOTSTRAP_VNI);
                if !values::VNI.contains(&vxlan_id) {
                    errs.push(FieldError::new(
                        "spec.bootstrap.vxlanID",
                        format!("{vxlan_id} is outside 1-{}", values::MAX_VNI),
                    ));
                }
                let family = b
                    .cidr
                    .split('/')
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok());
                let version = b
                    .ip_version
                    .or_else(|| family.map(|ip| IpVersion::of(&ip)))
                    .unwrap_or(IpVersion::V4);
                let range = AddressRange {
                    version,
                    cidr: b.cidr.clone(),
                    ..AddressRange::default()
                };
                if let Err(e) = hybridnet_api::range::parse_address_range(&range, "spec.bootstrap")
                {
                    for fe in e.0 {
                        errs.push(fe);
                    }
                }
                Some(Bootstrap {
                    name,
                    vxlan_id,
                    range,
                })
            }
        };
        errs.into_result()?;
        Ok(Settings {
            namespace: namespace.to_string(),
            image: names::image(registry, &version),
            version,
            operator_version: operator_version.to_string(),
            image_pull_policy: spec
                .image_pull_policy
                .unwrap_or(ImagePullPolicy::IfNotPresent),
            image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
            default_network_type: defaults.network_type.unwrap_or(NetworkType::Overlay),
            default_ip_family: defaults.ip_family.unwrap_or(IpFamily::IPv4),
            max_unavailable,
            prefer_vlan_interfaces: agent.prefer_vlan_interfaces.unwrap_or_default(),
            prefer_vxlan_interfaces: agent.prefer_vxlan_interfaces.unwrap_or_default(),
            prefer_bgp_interfaces: agent.prefer_bgp_interfaces.unwrap_or_default(),
            vxlan_udp_port,
            health_port,
            metrics_port,
            resources: agent.resources,
            extra_tolerations: agent.tolerations.unwrap_or_default(),
            node_selector: agent.node_selector.unwrap_or_default(),
            vlan_check_timeout,
            enable_vlan_arp_enhancement: agent.enable_vlan_arp_enhancement,
            check_pod_connectivity_from_host: agent.check_pod_connectivity_from_host,
            vtep_address_cidrs,
            update_ipinstance_status: agent.update_ip_instance_status,
            remove_upstream_leftovers: agent.remove_upstream_leftovers,
            remove_felix_leftovers: agent.remove_felix_leftovers,
            pod_match_expressions,
            vm_ip_retain: features.vm_ip_retain.unwrap_or(false),
            bin_dir,
            conf_dir,
            conflist_name,
            chained_plugins,
            mtu: cni.mtu,
            pod_failure_policy: webhook.failure_policy.unwrap_or(FailurePolicy::Ignore),
            webhook_port,
            bootstrap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::operator::{
        BootstrapNetwork, CniSpec, NodeAgentSpec, NodeAgentUpdateStrategy, WebhookSpec,
    };

    #[test]
    fn related_image_env_wins_over_registry_and_version() {
        let spec = HybridnetClusterSpec {
            registry: Some("quay.io/other".into()),
            version: Some("0.2.0".into()),
            ..Default::default()
        };
        let pinned = "mirror.local/h/hybridnet@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let s = settings(&spec).unwrap();
        assert_eq!(s.image, "quay.io/other/hybridnet:v0.2.0");
        assert_eq!(s.clone().with_related_image(None).unwrap().image, s.image);
        assert_eq!(
            s.clone().with_related_image(Some(" ")).unwrap().image,
            s.image
        );
        assert_eq!(
            s.clone().with_related_image(Some(pinned)).unwrap().image,
            pinned
        );
        for bad in ["no-tag", "a b:v1", "x@sha256:00"] {
            let e = s
                .clone()
                .with_related_image(Some(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("RELATED_IMAGE_HYBRIDNET"), "{e}");
        }
    }

    fn settings(spec: &HybridnetClusterSpec) -> Result<Settings, FieldErrors> {
        Settings::from_spec(spec, "0.1.0", "hybridnet-system")
    }

    fn fields(spec: &HybridnetClusterSpec) -> Vec<String> {
        settings(spec)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn empty_spec_gets_every_default() {
        let s = settings(&HybridnetClusterSpec::default()).unwrap();
        assert_eq!(s.version, "0.1.0");
        assert_eq!(s.image, "docker.io/hybridnet/hybridnet:v0.1.0");
        assert_eq!(s.image_pull_policy, ImagePullPolicy::IfNotPresent);
        assert_eq!(s.default_network_type, NetworkType::Overlay);
        assert_eq!(s.default_ip_family, IpFamily::IPv4);
        assert_eq!(s.max_unavailable, IntOrString::Int(1));
        assert_eq!(
            (
                s.health_port,
                s.metrics_port,
                s.vxlan_udp_port,
                s.webhook_port
            ),
            (11021, 9101, 8472, 9898)
        );
        assert_eq!(
            (
                s.bin_dir.as_str(),
                s.conf_dir.as_str(),
                s.conflist_name.as_str()
            ),
            ("/opt/cni/bin", "/etc/cni/net.d", "06-hybridnet.conflist")
        );
        assert_eq!(s.chained_plugins, vec!["bandwidth", "portmap"]);
        assert_eq!(s.pod_failure_policy, FailurePolicy::Ignore);
        assert_eq!(s.bootstrap, None);
    }

    #[test]
    fn image_follows_registry_and_version() {
        let spec = HybridnetClusterSpec {
            version: Some("0.2.0-rc.1".into()),
            registry: Some("registry.example.com:5000/net/".into()),
            ..Default::default()
        };
        assert_eq!(
            settings(&spec).unwrap().image,
            "registry.example.com:5000/net/hybridnet:v0.2.0-rc.1"
        );
    }

    #[test]
    fn bootstrap_defaults_and_family_from_the_cidr() {
        let spec = HybridnetClusterSpec {
            bootstrap: Some(BootstrapNetwork {
                name: None,
                vxlan_id: None,
                cidr: "fd00:100::/112".into(),
                ip_version: None,
            }),
            ..Default::default()
        };
        let b = settings(&spec).unwrap().bootstrap.unwrap();
        assert_eq!(b.name, "init");
        assert_eq!(b.vxlan_id, 4);
        assert_eq!(b.range.version, IpVersion::V6);
        assert_eq!(b.range.cidr, "fd00:100::/112");
    }

    #[test]
    fn hostile_and_malformed_values_are_refused_with_the_field() {
        let cases: Vec<(HybridnetClusterSpec, &str)> = vec![
            (
                HybridnetClusterSpec {
                    version: Some("v1.0".into()),
                    ..Default::default()
                },
                "spec.version",
            ),
            (
                HybridnetClusterSpec {
                    version: Some("1.0.0; rm -rf /".into()),
                    ..Default::default()
                },
                "spec.version",
            ),
            (
                HybridnetClusterSpec {
                    registry: Some("https://evil".into()),
                    ..Default::default()
                },
                "spec.registry",
            ),
            (
                HybridnetClusterSpec {
                    registry: Some("a b".into()),
                    ..Default::default()
                },
                "spec.registry",
            ),
            (
                HybridnetClusterSpec {
                    registry: Some(String::new()),
                    ..Default::default()
                },
                "spec.registry",
            ),
            (
                HybridnetClusterSpec {
                    registry: Some("repo@sha256".into()),
                    ..Default::default()
                },
                "spec.registry",
            ),
            (
                HybridnetClusterSpec {
                    image_pull_secrets: Some(vec![LocalObjectReference {
                        name: "Bad_Name".into(),
                    }]),
                    ..Default::default()
                },
                "spec.imagePullSecrets[0].name",
            ),
            (
                agent(NodeAgentSpec {
                    update_strategy: Some(NodeAgentUpdateStrategy {
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                    ..Default::default()
                }),
                "spec.nodeAgent.updateStrategy.maxUnavailable",
            ),
            (
                agent(NodeAgentSpec {
                    update_strategy: Some(NodeAgentUpdateStrategy {
                        max_unavailable: Some(IntOrString::String("150%".into())),
                    }),
                    ..Default::default()
                }),
                "spec.nodeAgent.updateStrategy.maxUnavailable",
            ),
            (
                agent(NodeAgentSpec {
                    update_strategy: Some(NodeAgentUpdateStrategy {
                        max_unavailable: Some(IntOrString::String("two".into())),
                    }),
                    ..Default::default()
                }),
                "spec.nodeAgent.updateStrategy.maxUnavailable",
            ),
            (
                agent(NodeAgentSpec {
                    prefer_vxlan_interfaces: Some(vec!["eth0,eth1".into()]),
                    ..Default::default()
                }),
                "spec.nodeAgent.preferVxlanInterfaces[0]",
            ),
            (
                agent(NodeAgentSpec {
                    prefer_vlan_interfaces: Some(vec!["x".repeat(16)]),
                    ..Default::default()
                }),
                "spec.nodeAgent.preferVlanInterfaces[0]",
            ),
            (
                agent(NodeAgentSpec {
                    prefer_bgp_interfaces: Some(vec!["../etc".into()]),
                    ..Default::default()
                }),
                "spec.nodeAgent.preferBgpInterfaces[0]",
            ),
            (
                agent(NodeAgentSpec {
                    vxlan_udp_port: Some(70000),
                    ..Default::default()
                }),
                "spec.nodeAgent.vxlanUDPPort",
            ),
            (
                agent(NodeAgentSpec {
                    health_port: Some(0),
                    ..Default::default()
                }),
                "spec.nodeAgent.healthPort",
            ),
            (
                agent(NodeAgentSpec {
                    metrics_port: Some(11021),
                    ..Default::default()
                }),
                "spec.nodeAgent.metricsPort",
            ),
            (
                cni(CniSpec {
                    bin_dir: Some("opt/cni/bin".into()),
                    ..Default::default()
                }),
                "spec.cni.binDir",
            ),
            (
                cni(CniSpec {
                    bin_dir: Some("/opt/../etc".into()),
                    ..Default::default()
                }),
                "spec.cni.binDir",
            ),
            (
                cni(CniSpec {
                    conf_dir: Some("/".into()),
                    ..Default::default()
                }),
                "spec.cni.confDir",
            ),
            (
                cni(CniSpec {
                    conf_dir: Some("/etc/cni net".into()),
                    ..Default::default()
                }),
                "spec.cni.confDir",
            ),
            (
                cni(CniSpec {
                    conf_dir: Some("/etc".into()),
                    ..Default::default()
                }),
                "spec.cni.confDir",
            ),
            (
                cni(CniSpec {
                    bin_dir: Some("/proc/self".into()),
                    ..Default::default()
                }),
                "spec.cni.binDir",
            ),
            (
                cni(CniSpec {
                    conflist_name: Some("../x.conflist".into()),
                    ..Default::default()
                }),
                "spec.cni.conflistName",
            ),
            (
                cni(CniSpec {
                    conflist_name: Some("10-x.conf".into()),
                    ..Default::default()
                }),
                "spec.cni.conflistName",
            ),
            (
                cni(CniSpec {
                    chained_plugins: Some(vec!["port map".into()]),
                    ..Default::default()
                }),
                "spec.cni.chainedPlugins[0]",
            ),
            (
                cni(CniSpec {
                    mtu: Some(100),
                    ..Default::default()
                }),
                "spec.cni.mtu",
            ),
            (
                HybridnetClusterSpec {
                    webhook: Some(WebhookSpec {
                        port: Some(-1),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.webhook.port",
            ),
            (boot("100.64.0.0/16", Some("Init")), "spec.bootstrap.name"),
            (boot("100.64.0.1/16", None), "spec.bootstrap.cidr"),
            (boot("not-a-cidr", None), "spec.bootstrap.cidr"),
            // Capacity is a property of the whole range.
            (boot("10.0.0.0/8", None), "spec.bootstrap"),
        ];
        for (spec, field) in cases {
            let got = fields(&spec);
            assert!(
                got.iter().any(|f| f == field),
                "{field}: got {got:?} for {spec:?}"
            );
        }
    }

    #[test]
    fn every_error_of_a_spec_is_reported_at_once() {
        let spec = HybridnetClusterSpec {
            version: Some("x".into()),
            registry: Some("a b".into()),
            ..agent(NodeAgentSpec {
                vxlan_udp_port: Some(0),
                ..Default::default()
            })
        };
        assert_eq!(
            fields(&spec),
            vec![
                "spec.version",
                "spec.registry",
                "spec.nodeAgent.vxlanUDPPort"
            ]
        );
    }

    #[test]
    fn semver_rules() {
        for ok in ["0.1.0", "10.20.30", "1.2.3-rc.1", "1.2.3-alpha-2"] {
            assert!(values::is_release_version(ok), "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.2",
            "v1.2.3",
            "1.2.3.4",
            "1..3",
            "1.2.3-",
            "1.2.3-a_b",
            "1.2.3 ",
        ] {
            assert!(!values::is_release_version(bad), "{bad}");
        }
        assert!(Settings::from_spec(&HybridnetClusterSpec::default(), "dev", "ns").is_err());
        assert!(Settings::from_spec(&HybridnetClusterSpec::default(), "0.1.0", "Bad NS").is_err());
    }

    fn timeout(v: &str) -> HybridnetClusterSpec {
        agent(NodeAgentSpec {
            vlan_check_timeout: Some(v.into()),
            ..Default::default()
        })
    }

    #[test]
    fn vlan_check_fields_are_unset_unless_the_spec_sets_them() {
        let s = settings(&HybridnetClusterSpec::default()).unwrap();
        assert_eq!(
            (
                s.vlan_check_timeout,
                s.enable_vlan_arp_enhancement,
                s.check_pod_connectivity_from_host
            ),
            (None, None, None)
        );
        let s = settings(&agent(NodeAgentSpec {
            vlan_check_timeout: Some("500ms".into()),
            enable_vlan_arp_enhancement: Some(false),
            check_pod_connectivity_from_host: Some(true),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(s.vlan_check_timeout, Some(Duration::from_millis(500)));
        assert_eq!(s.enable_vlan_arp_enhancement, Some(false));
        assert_eq!(s.check_pod_connectivity_from_host, Some(true));
    }

    #[test]
    fn vlan_check_timeout_takes_go_durations_up_to_30s() {
        let ms = |v: &str| {
            settings(&timeout(v))
                .unwrap_or_else(|e| panic!("{v:?}: {e}"))
                .vlan_check_timeout
                .unwrap()
                .as_millis()
        };
        for (v, want) in [
            ("0", 0),
            ("0s", 0),
            ("0h", 0),
            ("0ms", 0),
            ("3s", 3_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("0.1s", 100),
            ("0.001s", 1),
            ("0.5m", 30_000),
            ("30s", 30_000),
            ("30000ms", 30_000),
            ("29s999ms", 29_999),
            ("1s500ms", 1_500),
            ("007s", 7_000),
        ] {
            assert_eq!(ms(v), want, "{v:?}");
        }
    }

    #[test]
    fn malformed_and_hostile_vlan_check_timeouts_are_refused_with_the_field() {
        let long = format!("{}s", "9".repeat(100));
        let cases = [
            ("5x", "is not a duration"),
            ("-1s", "is not a duration"),
            ("-0", "is not a duration"),
            ("+3s", "is not a duration"),
            ("", "is not a duration"),
            ("s", "is not a duration"),
            ("3", "is not a duration"),
            ("00", "is not a duration"),
            (".5s", "is not a duration"),
            ("5.s", "is not a duration"),
            ("1..2s", "is not a duration"),
            ("1e3s", "is not a duration"),
            ("NaNs", "is not a duration"),
            ("inf", "is not a duration"),
            ("0x10s", "is not a duration"),
            ("3S", "is not a duration"),
            ("3 s", "is not a duration"),
            (" 3s", "is not a duration"),
            ("3s\n", "is not a duration"),
            ("3s;reboot", "is not a duration"),
            ("3s --kubeconfig=/x", "is not a duration"),
            ("\u{ff13}s", "is not a duration"),
            ("3\u{b5}s", "is not a duration"),
            ("3us", "is not a duration"),
            ("3ns", "is not a duration"),
            ("3d", "is not a duration"),
            (long.as_str(), "is not a duration"),
            ("0.0001s", "is finer than a millisecond"),
            ("1.0005s", "is finer than a millisecond"),
            ("31s", "is longer than 30s"),
            ("30001ms", "is longer than 30s"),
            ("30.001s", "is longer than 30s"),
            ("1m", "is longer than 30s"),
            ("1h", "is longer than 30s"),
            ("15s15s1ms", "is longer than 30s"),
            ("9999999999999999999999999999999h", "is longer than 30s"),
        ];
        for (v, want) in cases {
            let e = settings(&timeout(v)).unwrap_err();
            assert_eq!(e.0.len(), 1, "{v:?}: {e}");
            assert_eq!(e.0[0].field, "spec.nodeAgent.vlanCheckTimeout", "{v:?}");
            assert!(e.0[0].message.contains(want), "{v:?}: {e}");
            assert!(e.to_string().len() < 200, "{v:?}: message too long: {e}");
        }
        assert_eq!(
            settings(&timeout("5x")).unwrap_err().to_string(),
            "spec.nodeAgent.vlanCheckTimeout: \"5x\" is not a duration such as 3s, 500ms or 1m30s \
             (units ms, s, m, h; 0 disables the checks)"
        );
        // Control characters are escaped, not copied into the condition message.
        let e = settings(&timeout("3s\nDegraded: False"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.contains("\\n"), "{e}");
    }

    fn vtep(cidrs: &[&str]) -> HybridnetClusterSpec {
        agent(NodeAgentSpec {
            vtep_address_cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
            ..Default::default()
        })
    }

    fn pod_match(exprs: Vec<LabelSelectorRequirement>) -> HybridnetClusterSpec {
        HybridnetClusterSpec {
            webhook: Some(hybridnet_api::operator::WebhookSpec {
                additional_pod_match_expressions: Some(exprs),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn upstream_helm_settings_default_to_the_agents_and_upstreams_defaults() {
        let s = settings(&HybridnetClusterSpec::default()).unwrap();
        assert!(s.vtep_address_cidrs.is_empty());
        assert_eq!(
            (
                s.update_ipinstance_status,
                s.remove_upstream_leftovers,
                s.remove_felix_leftovers
            ),
            (None, None, None)
        );
        assert_eq!(
            s.pod_match_expressions,
            vec![req("app", "NotIn", Some(&["kube-proxy"]))]
        );
        assert!(!s.vm_ip_retain);
        let s = settings(&vtep(&["10.0.0.0/8", "fd00::/8", "0.0.0.0/0"])).unwrap();
        assert_eq!(
            s.vtep_address_cidrs,
            ["10.0.0.0/8", "fd00::/8", "0.0.0.0/0"]
        );
        let s = settings(&pod_match(vec![])).unwrap();
        assert!(s.pod_match_expressions.is_empty());
        let ok = settings(&pod_match(vec![
            req("app", "NotIn", Some(&["a", "b"])),
            req("example.com/x", "NotIn", Some(&["y"])),
            req("z", "NotIn", Some(&[""])),
        ]));
        assert!(ok.is_ok(), "{ok:?}");
        let features = |mc: Option<bool>, vm: Option<bool>| HybridnetClusterSpec {
            features: Some(hybridnet_api::operator::FeatureSwitches {
                multi_cluster: mc,
                vm_ip_retain: vm,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(settings(&features(Some(true), None)).is_ok());
        assert!(settings(&features(None, Some(true))).unwrap().vm_ip_retain);
        assert!(
            !settings(&features(Some(false), Some(false)))
                .unwrap()
                .vm_ip_retain
        );
    }

    #[test]
    fn hostile_upstream_helm_settings_are_refused_with_the_field() {
        let cases: Vec<(HybridnetClusterSpec, &str)> = vec![
            (vtep(&[]), "spec.nodeAgent.vtepAddressCIDRs"),
            (vtep(&["10.0.0.1/8"]), "spec.nodeAgent.vtepAddressCIDRs[0]"),
            (
                vtep(&["0.0.0.0/0", "10.0.0.0"]),
                "spec.nodeAgent.vtepAddressCIDRs[1]",
            ),
            (vtep(&["10.0.0.0/33"]), "spec.nodeAgent.vtepAddressCIDRs[0]"),
            (vtep(&["fd00::/129"]), "spec.nodeAgent.vtepAddressCIDRs[0]"),
            // The agent flag's separator, whitespace and injection attempts.
            (
                vtep(&["10.0.0.0/8,0.0.0.0/0"]),
                "spec.nodeAgent.vtepAddressCIDRs[0]",
            ),
            (vtep(&[" 10.0.0.0/8"]), "spec.nodeAgent.vtepAddressCIDRs[0]"),
            (
                vtep(&["10.0.0.0/8 --remove-felix-leftovers=true"]),
                "spec.nodeAgent.vtepAddressCIDRs[0]",
            ),
            (vtep(&[""]), "spec.nodeAgent.vtepAddressCIDRs[0]"),
            (
                vtep(&[&"9".repeat(100_000)]),
                "spec.nodeAgent.vtepAddressCIDRs[0]",
            ),
            (vtep(&["0.0.0.0/0"; 33]), "spec.nodeAgent.vtepAddressCIDRs"),
            (
                pod_match(vec![req("app", "in", Some(&["x"]))]),
                "spec.webhook.additionalPodMatchExpressions[0].operator",
            ),
            (
                pod_match(vec![req("app", "In", None)]),
                "spec.webhook.additionalPodMatchExpressions[0].values",
            ),
            (
                pod_match(vec![req("app", "NotIn", Some(&[]))]),
                "spec.webhook.additionalPodMatchExpressions[0].values",
            ),
            (
                pod_match(vec![req("app", "Exists", Some(&["x"]))]),
                "spec.webhook.additionalPodMatchExpressions[0].values",
            ),
            (
                pod_match(vec![req("", "Exists", None)]),
                "spec.webhook.additionalPodMatchExpressions[0].key",
            ),
            (
                pod_match(vec![req("-bad", "Exists", None)]),
                "spec.webhook.additionalPodMatchExpressions[0].key",
            ),
            (
                pod_match(vec![req("a/b/c", "Exists", None)]),
                "spec.webhook.additionalPodMatchExpressions[0].key",
            ),
            (
                pod_match(vec![req(&"k".repeat(64), "Exists", None)]),
                "spec.webhook.additionalPodMatchExpressions[0].key",
            ),
            (
                pod_match(vec![
                    req("ok", "NotIn", Some(&["x"])),
                    req("app", "NotIn", Some(&["kube proxy"])),
                ]),
                "spec.webhook.additionalPodMatchExpressions[1].values[0]",
            ),
            (
                pod_match(vec![req("app", "In", Some(&["x\nDegraded"]))]),
                "spec.webhook.additionalPodMatchExpressions[0].values[0]",
            ),
            (
                pod_match(vec![req("app", "In", Some(&["x"; 65]))]),
                "spec.webhook.additionalPodMatchExpressions[0].values",
            ),
            (
                pod_match(vec![req("app", "NotIn", Some(&["x"])); 17]),
                "spec.webhook.additionalPodMatchExpressions",
            ),
            // Well-formed, but the Pod webhooks switched off for every pod without (or with) the
            // label, or an exemption on a label every controller's pods carry.
            (
                pod_match(vec![req("app", "In", Some(&["x"]))]),
                "spec.webhook.additionalPodMatchExpressions[0].operator",
            ),
            (
                pod_match(vec![
                    req("ok", "NotIn", Some(&["x"])),
                    req("example.com/x", "Exists", None),
                ]),
                "spec.webhook.additionalPodMatchExpressions[1].operator",
            ),
            (
                pod_match(vec![req("app", "DoesNotExist", None)]),
                "spec.webhook.additionalPodMatchExpressions[0].operator",
            ),
            (
                pod_match(vec![req(
                    hybridnet_api::constants::label::WEBHOOK_IGNORE,
                    "NotIn",
                    Some(&["false"]),
                )]),
                "spec.webhook.additionalPodMatchExpressions[0].key",
            ),
            (
                pod_match(vec![req("pod-template-hash", "NotIn", Some(&["abc"]))]),
                "spec.webhook.additionalPodMatchExpressions[0].key",
            ),
            (
                pod_match(vec![req(
                    "batch.kubernetes.io/job-name",
                    "NotIn",
                    Some(&["x"]),
                )]),
                "spec.webhook.additionalPodMatchExpressions[0].key",
            ),
        ];
        let switched_off = |f: fn(&mut hybridnet_api::operator::FeatureSwitches)| {
            let mut features = hybridnet_api::operator::FeatureSwitches::default();
            f(&mut features);
            HybridnetClusterSpec {
                features: Some(features),
                ..Default::default()
            }
        };
        let cases = cases.into_iter().chain([
            (
                switched_off(|f| f.network_unavailable_taint = Some(false)),
                "spec.features.networkUnavailableTaint",
            ),
            (
                switched_off(|f| f.leak_repair = Some(false)),
                "spec.features.leakRepair",
            ),
            (switched_off(|f| f.bgp = Some(false)), "spec.features.bgp"),
        ]);
        for (spec, field) in cases {
            let got = fields(&spec);
            assert_eq!(got, [field], "{spec:?}");
            // A hostile value never turns into a huge or multi-line message.
            let msg = settings(&spec).unwrap_err().to_string();
            assert!(msg.len() < 2_000 && !msg.contains('\n'), "{msg}");
        }
    }

    proptest::proptest! {
        #[test]
        fn vlan_check_timeout_never_panics_and_stays_in_range(v in "\\PC{0,40}") {
            if let Ok(d) = parse_vlan_check_timeout(&v) {
                proptest::prop_assert!(d <= MAX_VLAN_CHECK_TIMEOUT);
                proptest::prop_assert_eq!(d.subsec_nanos() % 1_000_000, 0);
            }
        }

        #[test]
        fn vlan_check_timeout_durations_in_range_parse_exactly(
            secs in 0u64..=30, extra_ms in 0u64..1000, frac_digits in 0usize..4
        ) {
            let ms = (secs * 1000 + extra_ms).min(30_000);
            let d = Duration::from_millis(ms);
            let whole = format!("{}s{}ms", ms / 1000, ms % 1000);
            proptest::prop_assert_eq!(parse_vlan_check_timeout(&whole), Ok(d));
            let decimal = format!("{}.{:03}{}s", ms / 1000, ms % 1000, "0".repeat(frac_digits));
            proptest::prop_assert_eq!(parse_vlan_check_timeout(&decimal), Ok(d));
        }
    }

    fn agent(a: NodeAgentSpec) -> HybridnetClusterSpec {
        HybridnetClusterSpec {
            node_agent: Some(a),
            ..Default::default()
        }
    }
    fn cni(c: CniSpec) -> HybridnetClusterSpec {
        HybridnetClusterSpec {
            cni: Some(c),
            ..Default::default()
        }
    }
    fn boot(cidr: &str, name: Option<&str>) -> HybridnetClusterSpec {
        HybridnetClusterSpec {
            bootstrap: Some(BootstrapNetwork {
                name: name.map(str::to_string),
                vxlan_id: None,
                cidr: cidr.into(),
                ip_version: None,
            }),
            ..Default::default()
        }
    }
}
