//! IPv6 and IPv4 networks as written in a configuration (`2001:db8:1::/64`, `10.0.0.0/24`),
//! and the per-partition addresses carved from them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv6 network: its address with the host bits cleared, and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Net {
    network: Ipv6Addr,
    prefix: u8,
}

/// An IPv4 network: its address with the host bits cleared, and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a network ADDRESS/PREFIX: {reason}")]
pub struct NetError {
    pub input: String,
    pub reason: &'static str,
}

fn split(input: &str) -> Result<(&str, u8), NetError> {
    let error = |reason| NetError {
        input: input.to_owned(),
        reason,
    };
    let (address, prefix) = input.split_once('/').ok_or(error("no /PREFIX"))?;
    let prefix = prefix.parse().map_err(|_| error("bad prefix length"))?;
    Ok((address, prefix))
}

impl FromStr for Ipv6Net {
    type Err = NetError;

    fn from_str(input: &str) -> Result<Self, NetError> {
        let (address, prefix) = split(input)?;
        let error = |reason| NetError {
            input: input.to_owned(),
            reason,
        };
        let address: Ipv6Addr = address.parse().map_err(|_| error("bad IPv6 address"))?;
        if prefix > 128 {
            return Err(error("prefix longer than 128"));
        }
        let bits = u128::from(address);
        if bits & !mask128(prefix) != 0 {
            return Err(error("host bits set; write the network address"));
        }
        Ok(Self {
            network: address,
            prefix,
        })
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    fn from_str(input: &str) -> Result<Self, NetError> {
        let (address, prefix) = split(input)?;
        let error = |reason| NetError {
            input: input.to_owned(),
            reason,
        };
        let address: Ipv4Addr = address.parse().map_err(|_| error("bad IPv4 address"))?;
        if prefix > 32 {
            return Err(error("prefix longer than 32"));
        }
        if u32::from(address) & !mask32(prefix) != 0 {
            return Err(error("host bits set; write the network address"));
        }
        Ok(Self {
            network: address,
            prefix,
        })
    }
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl Ipv6Net {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask in the form SlapOS reports it (`ffff:ffff:ffff:ffff::`).
    pub fn netmask(&self) -> Ipv6Addr {
        Ipv6Addr::from(mask128(self.prefix))
    }

    /// The address `offset` hosts into the network, if the network holds it.
    pub fn host(&self, offset: u128) -> Option<Ipv6Addr> {
        let hosts = if self.prefix == 0 {
            u128::MAX
        } else {
            !mask128(self.prefix)
        };
        (offset <= hosts).then(|| Ipv6Addr::from(u128::from(self.network) | offset))
    }
}

impl Ipv4Net {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask32(self.prefix))
    }

    /// The `index`th usable host: the network and broadcast addresses are skipped (a /31 or /32
    /// has no room for partitions).
    pub fn host(&self, index: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        let offset = u64::from(index) + 1;
        if offset + 1 >= size {
            return None;
        }
        let offset = u32::try_from(offset).ok()?;
        Some(Ipv4Addr::from(u32::from(self.network) | offset))
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_hosts_inside_the_network_only() -> Result<(), NetError> {
        let v6: Ipv6Net = "2001:db8:1::/64".parse()?;
        assert_eq!(v6.host(0x100), "2001:db8:1::100".parse().ok());
        assert_eq!(v6.netmask().to_string(), "ffff:ffff:ffff:ffff::");
        assert_eq!(v6.host(1 << 64), None);

        let v4: Ipv4Net = "10.0.0.0/30".parse()?;
        assert_eq!(v4.host(0), "10.0.0.1".parse().ok());
        assert_eq!(v4.host(1), "10.0.0.2".parse().ok());
        // 10.0.0.3 is the broadcast address.
        assert_eq!(v4.host(2), None);
        assert_eq!(v4.netmask().to_string(), "255.255.255.252");
        Ok(())
    }

    #[test]
    fn refuses_what_is_not_a_network() {
        for bad in [
            "2001:db8::1/64",
            "2001:db8::/129",
            "2001:db8::",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Ipv6Net>().is_err(), "{bad}");
        }
        for bad in ["10.0.0.1/24", "10.0.0.0/33", "::/0"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }
}
