//! The network flags `run` and `workspace create` share.

use clap::Args;
use pyro_core::network::{AllowHost, Network, NetworkPolicy};

#[derive(Args, Debug, Clone)]
pub struct NetworkArgs {
    /// Outbound networking: shorthand for `--network-policy egress`
    #[arg(long, conflicts_with = "network_policy")]
    pub network: bool,
    /// `off` (no network device, the default), `egress` (TCP to public addresses, DNS through pyro)
    /// or `egress+published-ports`; the host itself is never reachable
    #[arg(long, value_name = "POLICY", value_parser = parse_policy)]
    pub network_policy: Option<NetworkPolicy>,
    /// Allow only this destination, HOST[:PORT] (repeatable); implies `egress`, and may name a
    /// private address
    #[arg(long = "allow-host", value_name = "HOST[:PORT]", value_parser = parse_allow_host)]
    pub allow_hosts: Vec<AllowHost>,
}

fn parse_policy(text: &str) -> Result<NetworkPolicy, String> {
    text.parse()
}

fn parse_allow_host(text: &str) -> Result<AllowHost, String> {
    text.parse()
}

impl NetworkArgs {
    pub fn network(&self) -> Result<Network, pyro_core::Error> {
        let policy = self
            .network_policy
            .or(self.network.then_some(NetworkPolicy::Egress));
        Network::choose(policy, self.allow_hosts.clone())
    }
}
