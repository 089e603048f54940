//! The command line, as clap derive types. Parsing is pure; the binary executes the result.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::{ListOutput, OutputFormat};
use crate::wait::WaitFor;

fn parse_output(s: &str) -> Result<OutputFormat, String> {
    s.parse()
}

fn parse_list_output(s: &str) -> Result<ListOutput, String> {
    s.parse()
}

/// `-l`: kubectl's label selector syntax, checked before any request; empty selects everything.
fn list_selector(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    crate::flags::validate_label_selector(s).map(|()| s.trim().to_string())
}

/// `-o` of `network create` and `subnet create`: refused at parse time, before anything is
/// written, so a wrong format never leaves a created object behind an error.
fn parse_created_output(s: &str) -> Result<OutputFormat, String> {
    if s.is_empty() {
        return Err("-o is empty: use yaml, json or name, or leave -o out for a message".into());
    }
    match s.parse()? {
        f @ (OutputFormat::Yaml | OutputFormat::Json | OutputFormat::Name) => Ok(f),
        f => Err(format!(
            "-o {f} is not an output of create: use yaml, json or name"
        )),
    }
}

/// `-o` of `install`: the HybridnetCluster as yaml or json.
fn parse_install_output(s: &str) -> Result<OutputFormat, String> {
    if s.is_empty() {
        return Err("-o is empty: use yaml or json, or leave -o out to apply".into());
    }
    match s.parse()? {
        f @ (OutputFormat::Yaml | OutputFormat::Json) => Ok(f),
        f => Err(format!("install -o {f}: use yaml or json")),
    }
}

/// `--request-timeout`: `None` means no timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestTimeout(pub Option<std::time::Duration>);

fn parse_timeout(s: &str) -> Result<RequestTimeout, String> {
    crate::flags::parse_request_timeout(s).map(RequestTimeout)
}

/// Value parser for flags naming an object of `kind`: names go into request paths and filters,
/// so a malformed one is refused instead of silently matching nothing.
fn object_name(kind: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| crate::manifest::validate_object_name(kind, s).map(|()| s.to_string())
}

fn namespace_name(s: &str) -> Result<String, String> {
    crate::manifest::validate_namespace(s).map(|()| s.to_string())
}

fn interface_name(s: &str) -> Result<String, String> {
    crate::flags::validate_interface_name(s).map(|()| s.to_string())
}

fn owner_kind(s: &str) -> Result<String, String> {
    crate::flags::validate_kind(s).map(|()| s.to_string())
}

fn label_selector(s: &str) -> Result<String, String> {
    crate::flags::validate_label_selector(s).map(|()| s.to_string())
}

/// kubectl hybridnet: networks, subnets, IP usage and leaks, policy-routing traces and status.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kubectl-hybridnet",
    bin_name = "kubectl hybridnet",
    version,
    about = "kubectl hybridnet: networks, subnets, IP usage and leaks, policy-routing traces, status",
    long_about = "kubectl hybridnet: operate a hybridnet cluster (overlay VXLAN and underlay VLAN/BGP pod networks).\n\nExit codes: 0 success; 1 error (cluster unreachable, object not found, request refused); 2 invalid flags or manifest; 3 `ip check` found problems; `status`: 4 the HybridnetCluster is Degraded, 5 it is not Available; 6 `--wait` ran out of time.",
    propagate_version = true,
    max_term_width = 110
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection and scope flags.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use (instead of the context's).
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use (instead of the context's).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// Bearer token for the API server (instead of the kubeconfig user's credentials).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Act as this user (impersonation, kubectl's --as).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Act as this group (repeatable; needs --as, as kubectl's --as-group).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// Namespace scope for namespaced objects (IPInstances, pods).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Time to wait for one API request: 0 (none), seconds, or a duration like 30s, 1m.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_timeout, default_value = "0", allow_hyphen_values = true)]
    pub request_timeout: RequestTimeout,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Networks (networking.alibaba.com/v1): ls, get, create, delete.
    #[command(subcommand, visible_alias = "networks", visible_alias = "net")]
    Network(NetworkCommand),
    /// Subnets (networking.alibaba.com/v1): ls, get, create, delete.
    #[command(subcommand, visible_alias = "subnets")]
    Subnet(SubnetCommand),
    /// Pod addresses (IPInstances): ls, usage, check.
    #[command(subcommand)]
    Ip(IpCommand),
    /// Remote clusters (multicluster.alibaba.com/v1 RemoteClusters): ls, status, connect,
    /// disconnect.
    #[command(subcommand, visible_alias = "clusters")]
    Cluster(ClusterCommand),
    /// The policy-routing path of a packet from a pod, computed with the node agent's plan.
    Trace(TraceArgs),
    /// HybridnetCluster conditions, versions, node agents, networks, usage and BGP sessions.
    Status(StatusArgs),
    /// Write or apply the HybridnetCluster `default` that installs hybridnet through the operator.
    Install(InstallArgs),
    /// Remove hybridnet: the HybridnetCluster (the operator's finalizer removes what it created),
    /// then the operator; RemoteClusters, Networks, Subnets, IPInstances and the CRDs stay unless
    /// --delete-data.
    Uninstall(UninstallArgs),
    /// Migration from an upstream (Go) hybridnet install: check what of it is left.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// The plugin's, the operator's and every node agent's version, with skew marked.
    Version(VersionArgs),
    /// Shell completion scripts, and the kubectl_complete-hybridnet helper for `kubectl hybridnet <TAB>`.
    Completion(CompletionArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum NetworkCommand {
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Show networks by name.
    Get(GetArgs),
    /// Create a network (VXLAN overlay, VLAN or BGP underlay, global BGP).
    Create(NetworkCreateArgs),
    /// Delete networks (refused while subnets still reference them).
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum SubnetCommand {
    /// List subnets.
    #[command(visible_alias = "list")]
    Ls(SubnetListArgs),
    /// Show subnets by name.
    Get(GetArgs),
    /// Create a subnet of a network.
    Create(SubnetCreateArgs),
    /// Delete subnets (refused while addresses of them are in use).
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// List remote clusters with their state and failing checks.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// One remote cluster: its conditions and the mirrors of its subnets and nodes.
    Status(ClusterStatusArgs),
    /// Connect this cluster and the one of --remote-context both ways: in each, a Secret with the
    /// other's CA and credentials, a Role that lets the operator read only that Secret, and a
    /// RemoteCluster pointing at the other (docs/multicluster.md).
    Connect(ClusterConnectArgs),
    /// Remove the RemoteCluster NAME and what `connect` made for it; with --remote-context also
    /// its counterpart in the other cluster.
    Disconnect(ClusterDisconnectArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ClusterConnectArgs {
    /// The other cluster's kubeconfig context.
    #[arg(long, value_name = "CONTEXT")]
    pub remote_context: String,
    /// Kubeconfig that holds --remote-context (default: this cluster's kubeconfig).
    #[arg(long, value_name = "FILE")]
    pub remote_kubeconfig: Option<PathBuf>,
    /// Name of the RemoteCluster here, pointing at the other cluster (default: --remote-context).
    #[arg(long, value_parser = object_name("remote cluster"))]
    pub name: Option<String>,
    /// Name of the RemoteCluster in the other cluster, pointing here (default: this cluster's
    /// kubeconfig context).
    #[arg(long, value_parser = object_name("remote cluster"))]
    pub remote_name: Option<String>,
    /// Namespace of the operator in both clusters: the Secret, Role and RoleBinding go there.
    #[arg(long, default_value = "hybridnet-system", value_parser = namespace_name)]
    pub operator_namespace: String,
    /// `spec.timeout` of both RemoteClusters: seconds per request to the other API server.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=3600))]
    pub timeout: Option<i32>,
    /// `--dry-run` (or `=client`): print what would be created in each cluster (never the
    /// credentials) and change nothing.
    #[arg(long, value_enum, default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterDisconnectArgs {
    /// Name of the RemoteCluster here.
    #[arg(value_parser = object_name("remote cluster"))]
    pub name: String,
    /// The other cluster's kubeconfig context: its RemoteCluster pointing here goes too.
    #[arg(long, value_name = "CONTEXT")]
    pub remote_context: Option<String>,
    /// Kubeconfig that holds --remote-context (default: this cluster's kubeconfig).
    #[arg(long, value_name = "FILE", requires = "remote_context")]
    pub remote_kubeconfig: Option<PathBuf>,
    /// `--dry-run` (or `=client`): list what would be deleted and change nothing.
    #[arg(long, value_enum, default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterStatusArgs {
    /// Name of the RemoteCluster.
    #[arg(value_parser = object_name("remote cluster"))]
    pub name: String,
    /// Output format: table, json or yaml (json and yaml: the RemoteCluster and its mirrors).
    #[arg(short = 'o', long, value_parser = parse_output, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Subcommand, Debug, Clone)]
pub enum IpCommand {
    /// List pod addresses (IPInstances).
    #[command(visible_alias = "list")]
    Ls(IpListArgs),
    /// Address usage per subnet and network.
    Usage(IpUsageArgs),
    /// Find leaked addresses, pods without addresses, duplicates and addresses outside their subnet.
    Check(IpCheckArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum MigrateCommand {
    /// What still belongs to upstream hybridnet (workloads, webhook configurations, its manager
    /// Lease, nodes not switched or with leftovers) and whether it is safe to go on. Exit 0 only
    /// when nothing is left, 3 while something is.
    Check(MigrateCheckArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MigrateCheckArgs {
    /// Output format: table, json or yaml.
    #[arg(short = 'o', long, value_parser = parse_output, default_value = "table")]
    pub output: OutputFormat,
}

/// kubectl's list flags, shared by every list command.
#[derive(Args, Debug, Clone)]
pub struct ListFlags {
    /// Output format: table, wide, json, yaml, name or jsonpath=TEMPLATE (kubectl's JSONPath
    /// template, applied to the List of objects).
    #[arg(short = 'o', long, value_parser = parse_list_output, default_value = "table", value_name = "FORMAT")]
    pub output: ListOutput,
    /// Label selector, sent to the API server (kubectl's syntax: k=v, k!=v, 'k in (a,b)',
    /// 'k notin (a)', k, !k; comma-separated, all must match).
    #[arg(short = 'l', long, value_parser = list_selector, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Print tables without the header line.
    #[arg(long)]
    pub no_headers: bool,
    /// List in pages of this many objects (the API's limit and continue); 0 lists in one request.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub chunk_size: u32,
}

impl Default for ListFlags {
    fn default() -> Self {
        Self {
            output: ListOutput::Format(OutputFormat::Table),
            selector: None,
            no_headers: false,
            chunk_size: 500,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub list: ListFlags,
}

#[derive(Args, Debug, Clone)]
pub struct SubnetListArgs {
    /// Only subnets of this network.
    #[arg(long, value_parser = object_name("network"))]
    pub network: Option<String>,
    #[command(flatten)]
    pub list: ListFlags,
}

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Names of the objects.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Output format: table, wide, json, yaml, name or jsonpath=TEMPLATE.
    #[arg(short = 'o', long, value_parser = parse_list_output, default_value = "table", value_name = "FORMAT")]
    pub output: ListOutput,
    /// Print tables without the header line.
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    /// Names of the objects.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// `server` sends the request with dryRun=All; nothing is deleted.
    #[arg(long, value_enum, default_value = "none", default_missing_value = "server", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
}

#[derive(Args, Debug, Clone)]
pub struct UninstallArgs {
    /// `--dry-run` (or `=client`): list what would be deleted, in order, and change nothing.
    #[arg(long, value_enum, default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
    /// Namespace of the operator (its Deployment and leader Lease).
    #[arg(long, default_value = "hybridnet-system", value_parser = namespace_name)]
    pub operator_namespace: String,
    /// Also delete every IPInstance, Subnet and Network (while the operator still runs), then
    /// the hybridnet CRDs. Pods keep their interfaces but lose their address bookkeeping.
    #[arg(long)]
    pub delete_data: bool,
    /// How long each step may take to finish (its objects gone): 0 (no limit), seconds or a
    /// duration like 90s, 5m.
    #[arg(long, value_parser = parse_timeout, default_value = "5m")]
    pub timeout: RequestTimeout,
}

/// kubectl's `--dry-run`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DryRun {
    /// Send the request.
    #[default]
    None,
    /// Print the object without contacting the cluster.
    Client,
    /// Send the request with dryRun=All: validated and admitted, not stored.
    Server,
}

/// The data-plane mode of a network.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeFlag {
    /// Overlay network over VXLAN (needs --vni).
    #[value(alias = "overlay")]
    Vxlan,
    /// Underlay network on a VLAN (needs --node-selector; --vlan-id, 0 = untagged).
    #[value(alias = "underlay")]
    Vlan,
    /// Underlay network routed by BGP (needs --node-selector, --asn and --peer).
    Bgp,
    /// Cluster-wide BGP network for pods on BGP nodes.
    GlobalBgp,
}

#[derive(Args, Debug, Clone)]
pub struct NetworkCreateArgs {
    /// Name of the network.
    pub name: String,
    /// Mode; inferred from --vni (vxlan), --vlan-id (vlan) or --asn/--peer (bgp) when absent.
    #[arg(long, value_enum)]
    pub mode: Option<ModeFlag>,
    /// VXLAN network identifier of an overlay network (1..16777215).
    #[arg(long, value_name = "VNI", allow_negative_numbers = true)]
    pub vni: Option<i64>,
    /// VLAN id of an underlay VLAN network (0 = untagged, 1..4094).
    #[arg(long, value_name = "ID", allow_negative_numbers = true)]
    pub vlan_id: Option<i64>,
    /// Member nodes of an underlay network: KEY=VALUE exact label match (repeatable, comma-separated).
    #[arg(long, value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// Local AS number of a BGP network.
    #[arg(long, value_name = "ASN", allow_negative_numbers = true)]
    pub asn: Option<String>,
    /// BGP peer: ASN@ADDRESS[,graceful-restart=SECONDS][,no-route][,allow-not-established][,password=SECRET] (repeatable).
    #[arg(long, value_name = "PEER", allow_hyphen_values = true)]
    pub peer: Vec<String>,
    /// `client` prints the manifest without contacting the cluster; `server` validates it there.
    #[arg(long, value_enum, default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
    /// Output of the created object: yaml, json or name (default: a message).
    #[arg(short = 'o', long, value_parser = parse_created_output)]
    pub output: Option<OutputFormat>,
}

#[derive(Args, Debug, Clone)]
pub struct SubnetCreateArgs {
    /// Name of the subnet.
    pub name: String,
    /// The parent network.
    #[arg(long)]
    pub network: String,
    /// The address block, canonical (e.g. 10.14.0.0/24 or fd00:14::/64).
    #[arg(long)]
    pub cidr: String,
    /// Gateway address (required in VLAN networks; never allocated).
    #[arg(long)]
    pub gateway: Option<String>,
    /// First allocatable address (default: network address + 1).
    #[arg(long)]
    pub start: Option<String>,
    /// Last allocatable address (default: broadcast - 1; IPv6: last address).
    #[arg(long)]
    pub end: Option<String>,
    /// Addresses only handed out by explicit assignment (repeatable, comma-separated).
    #[arg(long, value_name = "IP")]
    pub reserved: Vec<String>,
    /// Addresses never used (repeatable, comma-separated).
    #[arg(long, value_name = "IP")]
    pub exclude: Vec<String>,
    /// Only used by pods that name this subnet.
    #[arg(long)]
    pub private: bool,
    /// Overlay only: do not masquerade traffic leaving the cluster (autoNatOutgoing=false).
    #[arg(long)]
    pub no_nat: bool,
    /// VLAN networks only: this subnet's VLAN id (overrides the network's).
    #[arg(long, value_name = "ID", allow_negative_numbers = true)]
    pub vlan_id: Option<i64>,
    /// `client` prints the manifest without contacting the cluster; `server` validates it there.
    #[arg(long, value_enum, default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
    /// Output of the created object: yaml, json or name (default: a message).
    #[arg(short = 'o', long, value_parser = parse_created_output)]
    pub output: Option<OutputFormat>,
}

#[derive(Args, Debug, Clone)]
pub struct IpListArgs {
    /// Only addresses of this network.
    #[arg(long, value_parser = object_name("network"))]
    pub network: Option<String>,
    /// Only addresses of this subnet.
    #[arg(long, value_parser = object_name("subnet"))]
    pub subnet: Option<String>,
    /// Only addresses of pods on this node.
    #[arg(long, value_parser = object_name("node"))]
    pub node: Option<String>,
    /// Only addresses of this pod.
    #[arg(long, value_parser = object_name("pod"))]
    pub pod: Option<String>,
    /// Only reserved addresses (kept for stateful pods that are gone).
    #[arg(long)]
    pub reserved: bool,
    /// Also the addresses of other clusters' pods (the RemoteVteps the operator mirrors; node
    /// shown as CLUSTER/NODE, state `remote`). Not in `-o name` or `-o jsonpath` (no IPInstance).
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub list: ListFlags,
}

#[derive(Args, Debug, Clone)]
pub struct IpUsageArgs {
    /// Only this network and its subnets.
    #[arg(long, value_parser = object_name("network"))]
    pub network: Option<String>,
    /// Usage percentage from which a subnet or network is marked near exhaustion.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100), allow_negative_numbers = true)]
    pub threshold: u8,
    /// Output format: table, json or yaml.
    #[arg(short = 'o', long, value_parser = parse_output, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Clone)]
pub struct IpCheckArgs {
    /// Delete leaked IPInstances (after confirmation on a terminal).
    #[arg(long)]
    pub fix: bool,
    /// Do not ask for confirmation (needed with --fix when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Owner kinds whose addresses are retained while the owner exists.
    #[arg(long, value_delimiter = ',', default_value = "StatefulSet", value_parser = owner_kind)]
    pub stateful_kinds: Vec<String>,
    /// Output format: table, json or yaml.
    #[arg(short = 'o', long, value_parser = parse_output, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// The source: a pod (in -n NAMESPACE), NAMESPACE/POD, or node/NAME for traffic of a node.
    pub pod: String,
    /// Destination: an IP address, a pod name, NAMESPACE/POD, or node/NAME (default: an address
    /// outside the cluster, 198.51.100.1 or 2001:db8::1).
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Trace a reply packet of an established connection (enables the pod -> node reply mark).
    #[arg(long)]
    pub reply: bool,
    /// NetworkPolicy verdict for this destination port: N or N/PROTO (tcp, udp, sctp; default
    /// tcp). Without it, the trace shows which policies isolate each side.
    #[arg(long, value_name = "N/PROTO", value_parser = crate::policytrace::parse_port_proto)]
    pub port: Option<(u16, hybridnet_node::plan::policy::Protocol)>,
    /// Name of the nodes' uplink interface (default: the HybridnetCluster's first preferred VXLAN
    /// interface, else eth0); the API does not record it.
    #[arg(long, value_name = "IFACE", value_parser = interface_name)]
    pub uplink: Option<String>,
    /// Also resolve the path in the kernel of the nodes and, with --port, read the counters of the
    /// policy rules that decide each side (kubectl exec into the node agent pods).
    #[arg(long)]
    pub live: bool,
    /// Namespace of the node agent pods (for --live; the operator's namespace).
    #[arg(long, default_value = "hybridnet-system", value_parser = namespace_name)]
    pub agent_namespace: String,
    /// Label selector of the node agent pods (for --live).
    #[arg(long, default_value = "app.kubernetes.io/name=hybridnet-node", value_parser = label_selector)]
    pub agent_selector: String,
    /// Output format: table, json or yaml.
    #[arg(short = 'o', long, value_parser = parse_output, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Output format: table, json or yaml.
    #[arg(short = 'o', long, value_parser = parse_output, default_value = "table")]
    pub output: OutputFormat,
    /// Wait until the HybridnetCluster is Available at its current generation, with progress on
    /// stderr: `--wait` waits up to 5m, `--wait=DURATION` as long as given (0: no limit); exit
    /// code 6 when the time runs out.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, default_missing_value = crate::wait::DEFAULT_WAIT, value_parser = crate::wait::parse_wait)]
    pub wait: Option<WaitFor>,
}

/// Network type of pods that do not choose one.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkTypeFlag {
    Overlay,
    Underlay,
    GlobalBgp,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamilyFlag {
    Ipv4,
    Ipv6,
    DualStack,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicyFlag {
    Always,
    IfNotPresent,
    Never,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicyFlag {
    Ignore,
    Fail,
}

#[derive(Args, Debug, Clone, Default)]
pub struct InstallArgs {
    /// Operand version (e.g. 0.1.0; default: the operator's own).
    #[arg(long = "hybridnet-version", value_name = "VERSION")]
    pub hybridnet_version: Option<String>,
    /// Image registry and repository prefix (e.g. docker.io/hybridnet).
    #[arg(long)]
    pub registry: Option<String>,
    #[arg(long, value_enum)]
    pub image_pull_policy: Option<PullPolicyFlag>,
    /// Network type of pods that do not choose one (default overlay).
    #[arg(long, value_enum)]
    pub default_network_type: Option<NetworkTypeFlag>,
    /// IP family of pods that do not choose one (default ipv4).
    #[arg(long, value_enum)]
    pub default_ip_family: Option<IpFamilyFlag>,
    /// Create an overlay network with this CIDR at install (e.g. 100.64.0.0/16).
    #[arg(long, value_name = "CIDR")]
    pub bootstrap_cidr: Option<String>,
    /// Name of the bootstrap network and subnet (default init).
    #[arg(long, value_name = "NAME", requires = "bootstrap_cidr")]
    pub bootstrap_name: Option<String>,
    /// VNI of the bootstrap network (default 4).
    #[arg(
        long,
        value_name = "VNI",
        requires = "bootstrap_cidr",
        allow_negative_numbers = true
    )]
    pub bootstrap_vni: Option<i64>,
    /// UDP port of VXLAN (default 8472).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub vxlan_port: Option<i64>,
    /// Pod interface MTU (default: derived from the parent interface).
    #[arg(long, allow_negative_numbers = true)]
    pub mtu: Option<i64>,
    /// failurePolicy of the pod webhooks (default ignore).
    #[arg(long, value_enum)]
    pub webhook_failure_policy: Option<FailurePolicyFlag>,
    /// `client` (default with -o) prints the manifest; `server` validates it in the cluster.
    #[arg(long, value_enum, default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
    /// Print the HybridnetCluster (yaml or json) instead of applying it.
    #[arg(short = 'o', long, value_parser = parse_install_output)]
    pub output: Option<OutputFormat>,
    /// Take over fields another field manager owns (kubectl apply's --force-conflicts); without
    /// it a conflict is refused naming the fields and their manager.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Wait until the HybridnetCluster is Available at its current generation, with progress on
    /// stderr: `--wait` waits up to 5m, `--wait=DURATION` as long as given (0: no limit); exit
    /// code 6 when the time runs out.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, default_missing_value = crate::wait::DEFAULT_WAIT, value_parser = crate::wait::parse_wait)]
    pub wait: Option<WaitFor>,
}

#[derive(Args, Debug, Clone)]
pub struct VersionArgs {
    /// Output format: table, json or yaml.
    #[arg(short = 'o', long, value_parser = parse_output, default_value = "table")]
    pub output: OutputFormat,
    /// Only the plugin's version; the cluster is not contacted.
    #[arg(long)]
    pub client: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellFlag {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum, required_unless_present = "kubectl_helper")]
    pub shell: Option<ShellFlag>,
    /// Write the executable `kubectl_complete-hybridnet` into DIR (put DIR on PATH) so that
    /// `kubectl hybridnet <TAB>` completes (kubectl >= 1.26).
    #[arg(long, value_name = "DIR")]
    pub kubectl_helper: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-hybridnet",
            "ip",
            "ls",
            "-A",
            "--kubeconfig",
            "/tmp/k",
            "--request-timeout",
            "5s",
        ])
        .unwrap();
        assert!(cli.global.all_namespaces);
        assert_eq!(
            cli.global.request_timeout,
            RequestTimeout(Some(std::time::Duration::from_secs(5)))
        );
    }

    #[test]
    fn bad_output_is_a_usage_error() {
        let e = Cli::try_parse_from(["kubectl-hybridnet", "ip", "ls", "-o", "xml"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("unknown output format"), "{e}");
    }

    #[test]
    fn negative_numbers_are_values_not_flags() {
        let c = Cli::try_parse_from(["kubectl-hybridnet", "network", "create", "n", "--vni", "-1"])
            .unwrap();
        match c.command {
            Command::Network(NetworkCommand::Create(a)) => assert_eq!(a.vni, Some(-1)),
            other => panic!("{other:?}"),
        }
        let e = Cli::try_parse_from(["kubectl-hybridnet", "ip", "usage", "--threshold", "-5"])
            .unwrap_err();
        assert!(e.to_string().contains("-5 is not in 1..=100"), "{e}");
    }

    #[test]
    fn list_flags_parse_as_kubectls() {
        let c = Cli::try_parse_from([
            "kubectl-hybridnet",
            "ip",
            "ls",
            "-l",
            "app in (a,b),tier!=db",
            "--no-headers",
            "--chunk-size",
            "7",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .unwrap();
        match c.command {
            Command::Ip(IpCommand::Ls(a)) => {
                assert_eq!(a.list.selector.as_deref(), Some("app in (a,b),tier!=db"));
                assert!(a.list.no_headers);
                assert_eq!(a.list.chunk_size, 7);
                assert!(matches!(a.list.output, ListOutput::JsonPath(_)));
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["kubectl-hybridnet", "network", "ls"]).unwrap();
        match c.command {
            Command::Network(NetworkCommand::Ls(a)) => {
                assert_eq!(a.list.chunk_size, 500);
                assert_eq!(a.list.output, ListOutput::Format(OutputFormat::Table));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &["subnet", "ls", "-l", "a in (b"][..],
            &["subnet", "ls", "-l", "=x"][..],
            &["subnet", "ls", "-l", "a==b==c"][..],
            &["network", "ls", "--chunk-size", "-1"][..],
            &["network", "ls", "--chunk-size", "many"][..],
            &["network", "ls", "-o", "jsonpath={.items[0"][..],
            &["network", "ls", "-o", "jsonpath="][..],
            &["status", "-o", "jsonpath={.a}"][..],
        ] {
            let mut argv = vec!["kubectl-hybridnet"];
            argv.extend_from_slice(bad);
            let e = Cli::try_parse_from(&argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn wait_flag_forms() {
        let wait_of = |args: &[&str]| {
            let mut argv = vec!["kubectl-hybridnet"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(&argv).map(|c| c.command) {
                Ok(Command::Status(a)) => Ok(a.wait),
                Ok(Command::Install(a)) => Ok(a.wait),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.exit_code()),
            }
        };
        let secs = |s| Ok(Some(WaitFor(Some(std::time::Duration::from_secs(s)))));
        assert_eq!(wait_of(&["status"]), Ok(None));
        assert_eq!(wait_of(&["status", "--wait"]), secs(300));
        assert_eq!(wait_of(&["status", "--wait=90s"]), secs(90));
        assert_eq!(wait_of(&["install", "--wait=0"]), Ok(Some(WaitFor(None))));
        assert_eq!(
            wait_of(&["install", "--wait", "--force-conflicts"]),
            secs(300)
        );
        // A value needs `=` (as kubectl's optional values): a separate word is an argument.
        assert_eq!(wait_of(&["install", "--wait", "5m"]), Err(2));
        assert_eq!(wait_of(&["status", "--wait=soon"]), Err(2));
        assert_eq!(wait_of(&["status", "--wait="]), Err(2));
    }

    #[test]
    fn help_is_prefixed_kubectl_hybridnet() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Usage: kubectl hybridnet"), "{help}");
    }

    #[test]
    fn dry_run_flag_forms() {
        let c = Cli::try_parse_from([
            "kubectl-hybridnet",
            "network",
            "create",
            "n",
            "--vni",
            "4",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .unwrap();
        match c.command {
            Command::Network(NetworkCommand::Create(a)) => {
                assert_eq!(a.dry_run, DryRun::Client);
                assert_eq!(a.output, Some(OutputFormat::Yaml));
            }
            other => panic!("{other:?}"),
        }
    }
}
