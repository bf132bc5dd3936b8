//! Which clients may use a volume: a list of address ranges (`clients`) and whether their
//! source port must be reserved (`secure`, below 1024: only root on the client could have
//! sent the call). Checked on MOUNT and on every call that carries one of the volume's file
//! handles, since handles work without mounting.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range (an IPv4-mapped IPv6 address is its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix (e.g. 10.0.0.0/8)"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a list of ranges separated by commas and/or spaces (`10.0.0.0/8, 192.168.1.7`).
pub fn parse_clients(s: &str) -> Result<Vec<Cidr>, String> {
    s.split([',', ' '])
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Why a caller may not use a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address is outside the volume's `clients`.
    Client,
    /// The volume is `secure` and the call came from an unreserved port.
    InsecurePort,
}

/// Whether `peer` may use a volume with these `clients` (empty: everyone) and `secure`.
pub fn admits(clients: &[Cidr], secure: bool, peer: SocketAddr) -> Result<(), Refused> {
    if !clients.is_empty() && !clients.iter().any(|c| c.contains(peer.ip())) {
        return Err(Refused::Client);
    }
    if secure && peer.port() >= 1024 {
        return Err(Refused::InsecurePort);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_contain_what_they_should() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let one: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.168.1.7/32");
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_clients("10.0.0.0/8, 192.168.1.7 fd00::/8")
                .unwrap()
                .len(),
            3
        );
        assert!(parse_clients("10.0.0.0/8,nonsense").is_err());
    }

    #[test]
    fn clients_and_secure_admit_exactly_what_they_say() {
        let clients = parse_clients("10.0.0.0/8").unwrap();
        assert_eq!(admits(&clients, false, peer("10.3.4.5:40000")), Ok(()));
        assert_eq!(
            admits(&clients, false, peer("11.0.0.1:700")),
            Err(Refused::Client)
        );
        assert_eq!(admits(&[], false, peer("11.0.0.1:40000")), Ok(()));
        assert_eq!(
            admits(&[], true, peer("11.0.0.1:1024")),
            Err(Refused::InsecurePort)
        );
        assert_eq!(admits(&[], true, peer("11.0.0.1:1023")), Ok(()));
        assert_eq!(admits(&clients, true, peer("10.0.0.1:800")), Ok(()));
    }
}
