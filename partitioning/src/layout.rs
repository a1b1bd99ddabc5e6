//! The layout: what each partition of the computer is, computed from a [`FormatConfig`]
//! without looking at the machine.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::config::FormatConfig;

/// One computer partition as the design document describes it: a user (with a group of the
/// same name), a directory owned by that user, one global IPv6 and one local IPv4 address, and
/// a tap interface name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLayout {
    pub index: u32,
    /// The partition's reference on its computer (`slappart3`).
    pub reference: String,
    pub user: String,
    pub path: PathBuf,
    pub ipv6: Ipv6Addr,
    pub ipv6_prefix: u8,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix: u8,
    pub tap: String,
}

/// Partition directories are private to their user and readable by its group.
pub const PARTITION_MODE: u32 = 0o750;

impl FormatConfig {
    /// The layout of partition `index`, which may lie beyond `partitions` (a busy partition
    /// kept after the count shrank): it is the same whatever the count.
    pub fn partition(&self, index: u32) -> Option<PartitionLayout> {
        let ipv6 = self
            .ipv6_network
            .host(u128::from(self.ipv6_first_host) + u128::from(index))?;
        let ipv4 = self.ipv4_network.host(index)?;
        let reference = format!("{}{index}", self.partition_base);
        Some(PartitionLayout {
            index,
            path: self.instance_root.join(&reference),
            reference,
            user: format!("{}{index}", self.user_base),
            ipv6,
            ipv6_prefix: self.ipv6_network.prefix(),
            ipv4,
            ipv4_prefix: self.ipv4_network.prefix(),
            tap: format!("{}{index}", self.tap_base),
        })
    }

    /// Every configured partition, in order.
    pub fn layout(&self) -> Vec<PartitionLayout> {
        // Validation proved every index below `partitions` has addresses.
        (0..self.partitions)
            .filter_map(|i| self.partition(i))
            .collect()
    }

    /// The index of a partition reference of this configuration (`slappart12` → 12).
    pub fn index_of(&self, reference: &str) -> Option<u32> {
        let digits = reference.strip_prefix(&self.partition_base)?;
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.parse().ok()
    }
}

impl fmt::Display for PartitionLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} user={} dir={} ipv6={}/{} ipv4={}/{} tap={}",
            self.reference,
            self.user,
            self.path.display(),
            self.ipv6,
            self.ipv6_prefix,
            self.ipv4,
            self.ipv4_prefix,
            self.tap
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::file;

    #[test]
    fn every_partition_gets_its_own_user_directory_addresses_and_tap() {
        let config = file().validate().expect("valid");
        let layout = config.layout();
        assert_eq!(layout.len(), 10);
        let third = &layout[3];
        assert_eq!(third.reference, "slappart3");
        assert_eq!(third.user, "slapuser3");
        assert_eq!(third.tap, "slaptap3");
        assert_eq!(third.path, std::path::Path::new("/srv/slapgrid/slappart3"));
        assert_eq!(third.ipv6.to_string(), "2001:db8:1::103");
        assert_eq!(third.ipv4.to_string(), "10.0.0.4");

        let mut addresses: Vec<String> = layout
            .iter()
            .flat_map(|p| [p.ipv6.to_string(), p.ipv4.to_string(), p.tap.clone()])
            .collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(
            addresses.len(),
            30,
            "no two partitions share an address or tap"
        );
    }

    #[test]
    fn a_partition_is_the_same_whatever_the_count() {
        let small = file().validate().expect("valid");
        let mut larger = file();
        larger.partitions = 50;
        let larger = larger.validate().expect("valid");
        assert_eq!(small.layout()[..], larger.layout()[..10]);
        assert_eq!(small.partition(20), larger.partition(20));
        assert_eq!(small.index_of("slappart20"), Some(20));
        assert_eq!(small.index_of("slappart020"), None);
        assert_eq!(small.index_of("other1"), None);
    }
}
