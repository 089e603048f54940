//! Leader election through a `coordination.k8s.io/v1` Lease (kube-runtime has no elector).
//!
//! The holder renews the Lease every `retry`; writes carry the Lease's resourceVersion, so two
//! replicas can never both win one round. A standby takes the Lease over only after it has seen
//! the Lease unchanged for `lease_duration` of its own clock (no trust in the other's clock, as in
//! client-go). The holder gives leadership up when it could not renew for two thirds of the
//! duration, before any standby may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// One round's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// We hold the Lease (just acquired or renewed).
    Leading,
    /// Someone else holds it (or we lost a write race).
    Following { holder: Option<String> },
}

/// Acquires, renews and releases one Lease for one identity.
pub struct LeaseElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    /// The last Lease record seen (resourceVersion) and when it was first seen (local clock).
    observed: Option<(String, Instant)>,
    /// Create the Lease when it does not exist. A guard (another program's Lease that we must
    /// hold too, see [`LeaseElector::guard`]) is not created: nobody holds a missing Lease.
    create_missing: bool,
}

impl LeaseElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration,
            observed: None,
            create_missing: true,
        }
    }

    /// An elector for a Lease another program elects its leader with (upstream hybridnet's
    /// manager, docs/migration.md): taken over when it is free or expired and renewed while we
    /// lead, so that program cannot lead at the same time; a missing Lease counts as held by
    /// nobody and is not created.
    pub fn guard(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            create_missing: false,
            ..Self::new(client, namespace, name, identity, lease_duration)
        }
    }

    /// `namespace/name` of the Lease.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.api.namespace().unwrap_or_default(), self.name)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One election round: create, renew or take over the Lease when allowed.
    pub async fn round(&mut self) -> Result<Round, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            if !self.create_missing {
                self.observed = None;
                return Ok(Round::Leading);
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    info!(lease = %self.name, identity = %self.identity, "created the Lease and lead");
                    Ok(Round::Leading)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Following { holder: None }),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());

        // Track when the record last changed, on our clock.
        let changed_at = match &self.observed {
            Some((seen_rv, at)) if *seen_rv == rv => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((rv.clone(), at));
                at
            }
        };
        let their_duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        )
        .max(self.lease_duration);
        let expired = holder.is_none() || changed_at.elapsed() >= their_duration;
        if !ours && !expired {
            return Ok(Round::Following { holder });
        }

        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.identity.clone());
        new_spec.lease_duration_seconds = Some(self.duration_seconds());
        new_spec.renew_time = Some(Self::now());
        if !ours {
            new_spec.acquire_time = Some(Self::now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        // `replace` sends our resourceVersion: a concurrent writer makes this fail with 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                if let Some(rv) = written.metadata.resource_version {
                    self.observed = Some((rv, Instant::now()));
                }
                if !ours {
                    info!(lease = %self.name, identity = %self.identity, previous = ?holder, "took over the Lease");
                }
                Ok(Round::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!(lease = %self.name, "lost a write race for the Lease");
                Ok(Round::Following { holder })
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (clears the holder) if we hold it, so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(Self::now());
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Runs election rounds forever and publishes whether we lead. Leadership is withdrawn when no
/// renewal succeeded for two thirds of the lease duration, whatever the reason.
pub async fn run_election(
    mut elector: LeaseElector,
    mut guard: Option<LeaseElector>,
    retry: Duration,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let renew_deadline = elector.lease_duration * 2 / 3;
    let mut last_renewal: Option<Instant> = None;
    // Who holds the guard Lease, as last logged.
    let mut guard_holder: Option<Option<String>> = None;
    loop {
        if *shutdown.borrow() {
            leading.send_replace(false);
            if let Some(g) = guard.as_mut()
                && let Err(e) = g.release().await
            {
                warn!(error = %e, lease = %g.lease(), "could not release the guard Lease");
            }
            if let Err(e) = elector.release().await {
                warn!(error = %e, "could not release the Lease");
            }
            return;
        }
        // A round that hangs must not keep us leading past the deadline.
        let budget = match last_renewal {
            Some(at) => renew_deadline.saturating_sub(at.elapsed()),
            None => renew_deadline,
        };
        // Our own Lease first (one of our replicas contends for the guard), then the guard.
        let both = async {
            match elector.round().await? {
                Round::Leading => match guard.as_mut() {
                    Some(g) => match g.round().await? {
                        Round::Leading => Ok(Round::Leading),
                        Round::Following { holder } => {
                            if guard_holder.as_ref() != Some(&holder) {
                                info!(lease = %g.lease(), holder = ?holder, "another program holds the guard Lease (upstream's manager?): not leading");
                                guard_holder = Some(holder.clone());
                            }
                            Ok(Round::Following { holder })
                        }
                    },
                    None => Ok(Round::Leading),
                },
                following => {
                    // Not ours to hold without our own Lease: let our new leader have it now.
                    if *leading.borrow()
                        && let Some(g) = guard.as_mut()
                        && let Err(e) = g.release().await
                    {
                        warn!(error = %e, lease = %g.lease(), "could not release the guard Lease");
                    }
                    Ok(following)
                }
            }
        };
        let outcome: Result<Result<Round, kube::Error>, _> =
            tokio::time::timeout(budget.max(Duration::from_millis(50)), both).await;
        match outcome {
            Ok(Ok(Round::Leading)) => {
                last_renewal = Some(Instant::now());
                if !*leading.borrow() {
                    info!(identity = %elector.identity(), "became the leader");
                }
                leading.send_replace(true);
            }
            Ok(Ok(Round::Following { holder })) => {
                if *leading.borrow() {
                    warn!(identity = %elector.identity(), holder = ?holder, "lost the Lease");
                }
                last_renewal = None;
                leading.send_replace(false);
            }
            Ok(Err(e)) => {
                warn!(error = %e, "leader election round failed");
            }
            Err(_) => warn!("leader election round timed out"),
        }
        if let Some(at) = last_renewal
            && at.elapsed() >= renew_deadline
        {
            warn!(identity = %elector.identity(), "could not renew the Lease in time; stepping down");
            last_renewal = None;
            leading.send_replace(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => {}
        }
    }
}
