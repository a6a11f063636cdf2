//! A VM's network as callers ask for it: a policy and the destinations they allow. The gateway that
//! enforces it lives in `pyro-net` and runs in the VM's supervisor.

use serde::{Deserialize, Serialize};

pub use pyro_net::{AllowHost, EgressRules, NetworkPolicy};

use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub policy: NetworkPolicy,
    #[serde(default)]
    pub allow_hosts: Vec<AllowHost>,
}

impl Network {
    /// No network device.
    pub fn off() -> Network {
        Network::default()
    }

    /// Outbound networking to any public address.
    pub fn egress() -> Network {
        Network {
            policy: NetworkPolicy::Egress,
            allow_hosts: Vec::new(),
        }
    }

    /// The network from a caller's choices: `policy` when given (else `egress` when destinations
    /// are allowed, else `off`), and the allow list, which turns egress into "only these".
    pub fn choose(policy: Option<NetworkPolicy>, allow_hosts: Vec<AllowHost>) -> Result<Network> {
        let policy = match policy {
            Some(policy) => policy,
            None if allow_hosts.is_empty() => NetworkPolicy::Off,
            None => NetworkPolicy::Egress,
        };
        for allowed in &allow_hosts {
            allowed
                .check_not_the_host()
                .map_err(|why| Error::invalid(format!("invalid allowed host: {why}")))?;
        }
        if policy == NetworkPolicy::Off && !allow_hosts.is_empty() {
            return Err(
                Error::invalid("allowed hosts need a network: the network policy is off")
                    .with_hint(
                    "use the egress policy (or leave the policy out) together with allowed hosts",
                ),
            );
        }
        Ok(Network {
            policy,
            allow_hosts,
        })
    }

    /// Parses `HOST[:PORT]` entries, naming the one that does not parse.
    pub fn parse_allow_hosts(entries: &[String]) -> Result<Vec<AllowHost>> {
        entries
            .iter()
            .map(|e| {
                e.parse::<AllowHost>()
                    .map_err(|why| Error::invalid(format!("invalid allowed host: {why}")))
            })
            .collect()
    }

    /// Whether the VM gets a network device.
    pub fn has_device(&self) -> bool {
        self.policy.has_network()
    }

    /// What the gateway enforces.
    pub fn rules(&self) -> EgressRules {
        EgressRules {
            allow: self.allow_hosts.clone(),
        }
    }

    /// The allow list as callers wrote it.
    pub fn allow_host_names(&self) -> Vec<String> {
        self.allow_hosts.iter().map(|a| a.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_imply_egress_and_refuse_off() {
        let hosts = Network::parse_allow_hosts(&["example.com:443".into()]).unwrap();
        assert_eq!(Network::choose(None, vec![]).unwrap(), Network::off());
        assert_eq!(
            Network::choose(None, hosts.clone()).unwrap().policy,
            NetworkPolicy::Egress
        );
        assert!(Network::choose(Some(NetworkPolicy::Off), hosts).is_err());
        let err = Network::parse_allow_hosts(&["a:b".into()]).unwrap_err();
        assert!(err.message().contains("a:b"), "{}", err.message());
    }

    #[test]
    fn an_allowed_host_is_never_the_host_itself() {
        for (ip, _) in pyro_net::policy::host_networks() {
            let Ok(hosts) = Network::parse_allow_hosts(&[format!("{ip}:80")]) else {
                continue; // loopback: refused as it parses
            };
            let err = Network::choose(None, hosts).unwrap_err();
            assert!(
                err.message().contains("the host itself"),
                "{}",
                err.message()
            );
        }
    }
}
