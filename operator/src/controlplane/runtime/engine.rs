//! The control plane's use of the pure IPAM engine: one call per decision, MACs included, and
//! "observe" to make memory agree with an IPInstance found in the API.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hybridnet_api::operator::IpFamily;
use hybridnet_api::v1::{IPInstance, Network, Subnet};
use tracing::{debug, warn};

use crate::ipam::{
    AllocateRequest, Allocation, AssignCandidate, AssignRequest, Conflict, HeldIp, HoldState,
    InstanceInput, Ipam, IpamError, MacAddr, NetworkInput, PodKey, SubnetInput,
};

/// The in-memory IPAM of the leader.
pub struct Engine {
    ipam: Ipam,
}

impl Engine {
    /// Builds the IPAM from a consistent list of the cluster's objects.
    pub fn build(
        networks: &[Network],
        subnets: &[Subnet],
        instances: &[IPInstance],
    ) -> (Self, Vec<Conflict>) {
        let (ipam, conflicts) = Ipam::rebuild_from_crds(networks, subnets, instances);
        (Self { ipam }, conflicts)
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    fn with_mac(
        &mut self,
        network: &str,
        pod: &PodKey,
        allocs: Vec<Allocation>,
        mac: Option<MacAddr>,
    ) -> Result<(Vec<Allocation>, MacAddr), IpamError> {
        let requested = mac.map(|m| m.to_string());
        match self.ipam.allocate_mac(network, pod, requested.as_deref()) {
            Ok(m) => Ok((allocs, m)),
            Err(e) => {
                for a in &allocs {
                    let _ = self.ipam.release(&a.network, &a.subnet, a.ip);
                }
                Err(e)
            }
        }
    }

    /// Allocates one address per family of `family` and the pod's MAC (requested or generated).
    pub fn allocate(
        &mut self,
        network: &str,
        pod: &PodKey,
        family: IpFamily,
        subnets: &[String],
        mac: Option<MacAddr>,
    ) -> Result<(Vec<Allocation>, MacAddr), IpamError> {
        let allocs = self.ipam.allocate(&AllocateRequest {
            network: network.to_string(),
            pod: pod.clone(),
            family,
            subnets: subnets.to_vec(),
        })?;
        self.with_mac(network, pod, allocs, mac)
    }

    /// Assigns given addresses (retained or from the ip-pool) and the pod's MAC.
    pub fn assign(
        &mut self,
        network: &str,
        pod: &PodKey,
        candidates: &[AssignCandidate],
        force: bool,
        mac: Option<MacAddr>,
    ) -> Result<(Vec<Allocation>, MacAddr), IpamError> {
        let before: BTreeSet<IpAddr> = self
            .ipam
            .pod_ips(network, pod)
            .iter()
            .map(|h| h.ip)
            .collect();
        let allocs = self.ipam.assign(&AssignRequest {
            network: network.to_string(),
            pod: pod.clone(),
            candidates: candidates.to_vec(),
            force,
        })?;
        let requested = mac.map(|m| m.to_string());
        match self.ipam.allocate_mac(network, pod, requested.as_deref()) {
            Ok(m) => Ok((allocs, m)),
            Err(e) => {
                // Give back only what this call newly took.
                for a in allocs.iter().filter(|a| !before.contains(&a.ip)) {
                    let _ = self.ipam.release(&a.network, &a.subnet, a.ip);
                }
                Err(e)
            }
        }
    }

    /// Frees an address whose IPInstance is gone.
    pub fn release(&mut self, network: &str, subnet: &str, ip: IpAddr) {
        if let Err(e) = self.ipam.release(network, subnet, ip) {
            debug!(network, subnet, %ip, error = %e, "release of an address the IPAM does not know");
        }
    }

    /// Marks an address Reserved (stateful pod gone).
    pub fn reserve(&mut self, network: &str, subnet: &str, ip: IpAddr) {
        if let Err(e) = self.ipam.reserve(network, subnet, ip) {
            debug!(network, subnet, %ip, error = %e, "reserve of an address the IPAM does not hold");
        }
    }

    /// Makes memory agree with an existing, live IPInstance: its address is held by its pod with
    /// its state (closes a window upstream leaves open).
    pub fn observe(&mut self, instance: &IPInstance) {
        let Ok(input) = InstanceInput::from_crd(instance) else {
            return;
        };
        let holder = self.ipam.holder_of(&input.network, input.ip);
        let same_pod = holder.as_ref().is_some_and(|h| {
            h.namespace == input.namespace && h.pod == input.pod && h.subnet == input.subnet
        });
        if !same_pod {
            let Some(pod) = input.pod.clone() else {
                // An anonymous reservation: only make sure the address is not free.
                return;
            };
            if holder.is_some() {
                warn!(ip = %input.ip, ipinstance = %input.name, namespace = %input.namespace, "IPAM had another holder for an existing IPInstance; correcting");
                self.release(&input.network, &input.subnet, input.ip);
            }
            let key = PodKey::new(input.namespace.clone(), pod);
            if let Err(e) = self.ipam.assign(&AssignRequest {
                network: input.network.clone(),
                pod: key.clone(),
                candidates: vec![AssignCandidate {
                    subnet: Some(input.subnet.clone()),
                    ip: input.ip,
                }],
                force: true,
            }) {
                warn!(ip = %input.ip, error = %e, "could not record an existing IPInstance in the IPAM");
                return;
            }
            if let Some(m) = input.mac {
                let _ = self
                    .ipam
                    .allocate_mac(&input.network, &key, Some(&m.to_string()));
            }
        }
        let state = self
            .ipam
            .holder_of(&input.network, input.ip)
            .map(|h| h.state);
        if input.state == HoldState::Reserved && state == Some(HoldState::Allocated) {
            self.reserve(&input.network, &input.subnet, input.ip);
        }
    }

    /// Applies a Network and its live Subnets; forgets subnets that are gone. Returns problems
    /// (invalid or changed immutable fields) to report.
    pub fn sync_network(&mut self, network: &Network, subnets: &[Subnet]) -> Vec<String> {
        let mut problems = Vec::new();
        let name = network.metadata.name.clone().unwrap_or_default();
        match NetworkInput::from_crd(network) {
            Ok(n) => {
                if let Err(e) = self.ipam.upsert_network(n) {
                    problems.push(e.to_string());
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        let mut live = BTreeSet::new();
        for s in subnets.iter().filter(|s| s.spec.network == name) {
            live.insert(s.metadata.name.clone().unwrap_or_default());
            match SubnetInput::from_crd(s) {
                Ok(i) => {
                    if let Err(e) = self.ipam.upsert_subnet(i) {
                        problems.push(e.to_string());
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        for gone in self.ipam.subnet_names(&name) {
            if !live.contains(&gone) {
                let dropped = self.ipam.remove_subnet(&gone);
                if !dropped.is_empty() {
                    warn!(subnet = %gone, held = dropped.len(), "subnet removed while addresses were held");
                }
            }
        }
        problems
    }

    pub fn remove_network(&mut self, name: &str) {
        for s in self.ipam.subnet_names(name) {
            self.ipam.remove_subnet(&s);
        }
        self.ipam.remove_network(name);
    }

    pub fn held_ips(&self) -> Vec<HeldIp> {
        self.ipam.held_ips()
    }
}
