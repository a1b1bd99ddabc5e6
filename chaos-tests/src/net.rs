//! The test network: one network namespace per replica, all on one bridge (in a hub
//! namespace), each replica with its own IPv6 address in a private /64; the harness itself
//! reaches them through a veth pair from its own namespace. Faults between replicas are
//! nftables rules inside their namespaces. Everything is removed when the `Network` drops.
//!
//! Only addresses inside these namespaces are ever a target of traffic (the /64 is a unique
//! local prefix of the run's own).

use std::io::Write;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};

use crate::ChaosError;

pub struct Network {
    /// A short tag that names this run's namespaces and links (`sc1a2b`).
    tag: String,
    /// The /64, as its first four groups.
    prefix: [u16; 4],
    replicas: usize,
    /// Whether namespaces were created (cleaned on drop).
    created: bool,
}

pub use test_kit::fronts::Blocked;

impl Network {
    /// Creates namespaces for `replicas` replicas. Needs root.
    pub fn create(replicas: usize, tag_seed: u64) -> Result<Self, ChaosError> {
        let tag = format!(
            "sc{:04x}",
            (tag_seed ^ u64::from(std::process::id())) & 0xffff
        );
        let group = u16::try_from((tag_seed >> 16) & 0xffff).unwrap_or(0);
        let mut network = Self {
            prefix: [
                0xfd5c,
                u16::from_str_radix(&tag[2..], 16).unwrap_or(0),
                group,
                0,
            ],
            tag,
            replicas,
            created: false,
        };
        network.build()?;
        Ok(network)
    }

    fn hub(&self) -> String {
        format!("{}h", self.tag)
    }

    /// The namespace replica `i` runs in.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}r{i}", self.tag)
    }

    /// The run's /64 (`fd5c:1a2b:7:0::/64`): every member's and client's address is in it.
    pub fn network(&self) -> String {
        let [a, b, c, d] = self.prefix;
        format!("{}/64", Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
    }

    pub fn address(&self, i: usize) -> Ipv6Addr {
        let [a, b, c, d] = self.prefix;
        Ipv6Addr::new(
            a,
            b,
            c,
            d,
            0,
            0,
            0,
            u16::try_from(i + 1).unwrap_or(u16::MAX),
        )
    }

    fn client_address(&self) -> Ipv6Addr {
        let [a, b, c, d] = self.prefix;
        Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0x100)
    }

    fn build(&mut self) -> Result<(), ChaosError> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        self.created = true;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        for i in 0..self.replicas {
            let ns = self.namespace(i);
            let port = format!("p{i}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/64", self.address(i)),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
        }
        // The harness's own way in: a veth from this namespace to the bridge.
        let outside = format!("{}c", self.tag);
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", "pc", "netns", &hub,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/64", self.client_address()),
            "dev",
            &outside,
            "nodad",
        ])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&["-n", &hub, "link", "set", "pc", "master", "br0", "up"])?;
        Ok(())
    }

    /// Blocks traffic as `blocked` says (replacing any earlier rules): for each `(from, to)`,
    /// `to` drops packets from `from` and `from` drops packets to `to`. Clients are never
    /// blocked.
    pub fn partition(&self, blocked: &Blocked) -> Result<(), ChaosError> {
        self.heal()?;
        for me in 0..self.replicas {
            let deaf_to: Vec<String> = blocked
                .iter()
                .filter(|(_, to)| *to == me)
                .map(|(from, _)| self.address(*from).to_string())
                .collect();
            let mute_to: Vec<String> = blocked
                .iter()
                .filter(|(from, _)| *from == me)
                .map(|(_, to)| self.address(*to).to_string())
                .collect();
            if deaf_to.is_empty() && mute_to.is_empty() {
                continue;
            }
            let mut rules = String::from("table inet chaos {\n");
            rules.push_str("  chain input { type filter hook input priority 0; policy accept;\n");
            if !deaf_to.is_empty() {
                rules.push_str(&format!(
                    "    ip6 saddr {{ {} }} drop\n",
                    deaf_to.join(", ")
                ));
            }
            rules.push_str(
                "  }\n  chain output { type filter hook output priority 0; policy accept;\n",
            );
            if !mute_to.is_empty() {
                rules.push_str(&format!(
                    "    ip6 daddr {{ {} }} drop\n",
                    mute_to.join(", ")
                ));
            }
            rules.push_str("  }\n}\n");
            nft(&self.namespace(me), &rules)?;
        }
        Ok(())
    }

    /// Removes every rule: all replicas reach each other again.
    pub fn heal(&self) -> Result<(), ChaosError> {
        for me in 0..self.replicas {
            // Absent table: nothing to heal there.
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.namespace(me),
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    "chaos",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        for i in 0..self.replicas {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
        // The outside end of the client veth goes with its peer; in case it did not:
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}c", self.tag)])
            .stderr(Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) -> Result<(), ChaosError> {
    run("ip", args, None)
}

fn nft(namespace: &str, rules: &str) -> Result<(), ChaosError> {
    run(
        "ip",
        &["netns", "exec", namespace, "nft", "-f", "-"],
        Some(rules),
    )
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), ChaosError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ChaosError::Setup(format!("{program}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| ChaosError::Setup(format!("{program}: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| ChaosError::Setup(format!("{program}: {e}")))?;
    if !output.status.success() {
        return Err(ChaosError::Setup(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
