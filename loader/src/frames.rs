//! Ethernet frames around UDP datagrams, in userspace: what a lambda expects to find in its XDP
//! context, built from a datagram, and the datagram read back out of the frame it answers with.
//!
//! Used to craft packets for `BPF_PROG_TEST_RUN` and by the tests; both directions compute and
//! check real IPv4 header and UDP checksums, so a frame that passes here would pass a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const ETH_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_UDP: u8 = 17;
const UDP_LEN: usize = 8;

/// Why a frame could not be built or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("source {src} and destination {dst} are not the same IP version")]
    MixedFamilies { src: IpAddr, dst: IpAddr },
    #[error("a {len}-byte UDP payload does not fit one IP datagram")]
    PayloadTooLarge { len: usize },
    #[error("frame of {len} bytes is truncated: {what}")]
    Truncated { len: usize, what: &'static str },
    #[error("not a UDP frame: {what}")]
    NotUdp { what: String },
    #[error("bad {which} checksum (sums to {sum:#06x}, want 0xffff)")]
    BadChecksum { which: &'static str, sum: u16 },
    #[error("{what} length field says {field} bytes but {actual} are there")]
    BadLength {
        what: &'static str,
        field: usize,
        actual: usize,
    },
}

/// A UDP datagram between two endpoints, with the MAC addresses of the frame around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Internet checksum fold over big-endian words, starting from `sum`.
fn ones_sum(mut sum: u64, bytes: &[u8]) -> u16 {
    for pair in bytes.chunks(2) {
        sum += (u64::from(pair[0]) << 8) | pair.get(1).copied().map(u64::from).unwrap_or(0);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, udp_len: usize) -> u64 {
    let mut bytes = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
        }
        _ => unreachable!("families checked by the callers"),
    }
    u64::from(ones_sum(0, &bytes)) + u64::from(IPPROTO_UDP) + udp_len as u64
}

impl UdpFrame {
    /// Encodes the frame: Ethernet, IPv4 (TTL 64, DF, no options) or IPv6 (hop limit 64), UDP
    /// with a correct checksum, then the payload.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let (src, dst) = (self.src.ip(), self.dst.ip());
        let udp_len = UDP_LEN + self.payload.len();
        let ip_len = match src {
            IpAddr::V4(_) => 20,
            IpAddr::V6(_) => 40,
        };
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(FrameError::MixedFamilies { src, dst });
        }
        if udp_len + if src.is_ipv4() { ip_len } else { 0 } > usize::from(u16::MAX) {
            return Err(FrameError::PayloadTooLarge {
                len: self.payload.len(),
            });
        }
        let mut frame = Vec::with_capacity(ETH_LEN + ip_len + udp_len);
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
                ip[6] = 0x40; // don't fragment
                ip[8] = 64;
                ip[9] = IPPROTO_UDP;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let check = !ones_sum(0, &ip);
                ip[10..12].copy_from_slice(&check.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
                frame.extend_from_slice(&[IPPROTO_UDP, 64]);
                frame.extend_from_slice(&s.octets());
                frame.extend_from_slice(&d.octets());
            }
            _ => unreachable!("families checked above"),
        }
        let udp_start = frame.len();
        frame.extend_from_slice(&self.src.port().to_be_bytes());
        frame.extend_from_slice(&self.dst.port().to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&self.payload);
        let mut check = !ones_sum(pseudo_header_sum(src, dst, udp_len), &frame[udp_start..]);
        if check == 0 {
            check = 0xffff;
        }
        frame[udp_start + 6..udp_start + 8].copy_from_slice(&check.to_be_bytes());
        Ok(frame)
    }

    /// Decodes a frame, checking every length and checksum a receiving kernel would check.
    /// Trailing bytes past the IP length (Ethernet padding) are ignored.
    pub fn decode(frame: &[u8]) -> Result<UdpFrame, FrameError> {
        let len = frame.len();
        let truncated = |what| FrameError::Truncated { len, what };
        let eth = frame
            .get(..ETH_LEN)
            .ok_or_else(|| truncated("Ethernet header"))?;
        let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
        let (src_ip, dst_ip, udp): (IpAddr, IpAddr, &[u8]) = match ethertype {
            ETH_P_IPV4 => {
                let ip = frame
                    .get(ETH_LEN..ETH_LEN + 20)
                    .ok_or_else(|| truncated("IPv4 header"))?;
                if ip[0] >> 4 != 4 {
                    return Err(FrameError::NotUdp {
                        what: format!("IP version {}", ip[0] >> 4),
                    });
                }
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let header = frame
                    .get(ETH_LEN..ETH_LEN + ihl.max(20))
                    .ok_or_else(|| truncated("IPv4 options"))?;
                let sum = ones_sum(0, header);
                if sum != 0xffff {
                    return Err(FrameError::BadChecksum {
                        which: "IPv4 header",
                        sum,
                    });
                }
                if ip[9] != IPPROTO_UDP {
                    return Err(FrameError::NotUdp {
                        what: format!("IP protocol {}", ip[9]),
                    });
                }
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                let datagram = frame
                    .get(ETH_LEN + ihl..ETH_LEN + total)
                    .filter(|_| total >= ihl)
                    .ok_or(FrameError::BadLength {
                        what: "IPv4 total",
                        field: total,
                        actual: len - ETH_LEN,
                    })?;
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                (src.into(), dst.into(), datagram)
            }
            ETH_P_IPV6 => {
                let ip = frame
                    .get(ETH_LEN..ETH_LEN + 40)
                    .ok_or_else(|| truncated("IPv6 header"))?;
                if ip[6] != IPPROTO_UDP {
                    return Err(FrameError::NotUdp {
                        what: format!("IPv6 next header {}", ip[6]),
                    });
                }
                let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                let datagram = frame.get(ETH_LEN + 40..ETH_LEN + 40 + payload_len).ok_or(
                    FrameError::BadLength {
                        what: "IPv6 payload",
                        field: payload_len,
                        actual: len - ETH_LEN - 40,
                    },
                )?;
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16 bytes"));
                let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16 bytes"));
                (src.into(), dst.into(), datagram)
            }
            other => {
                return Err(FrameError::NotUdp {
                    what: format!("ethertype {other:#06x}"),
                });
            }
        };
        let header = udp.get(..UDP_LEN).ok_or_else(|| truncated("UDP header"))?;
        let udp_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if udp_len != udp.len() {
            return Err(FrameError::BadLength {
                what: "UDP",
                field: udp_len,
                actual: udp.len(),
            });
        }
        let check = u16::from_be_bytes([header[6], header[7]]);
        // Zero means "no checksum", allowed over IPv4 only.
        if check != 0 || src_ip.is_ipv6() {
            let sum = ones_sum(pseudo_header_sum(src_ip, dst_ip, udp_len), udp);
            if sum != 0xffff {
                return Err(FrameError::BadChecksum { which: "UDP", sum });
            }
        }
        Ok(UdpFrame {
            dst_mac: eth[0..6].try_into().expect("6 bytes"),
            src_mac: eth[6..12].try_into().expect("6 bytes"),
            src: SocketAddr::new(src_ip, u16::from_be_bytes([header[0], header[1]])),
            dst: SocketAddr::new(dst_ip, u16::from_be_bytes([header[2], header[3]])),
            payload: udp[UDP_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(src: &str, dst: &str, payload: &[u8]) -> UdpFrame {
        UdpFrame {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn round_trips_ipv4_and_ipv6_with_odd_and_even_payloads() {
        for (src, dst) in [
            ("10.0.0.1:4000", "10.0.0.2:9000"),
            ("[fd00::1]:4000", "[fd00::2]:9000"),
        ] {
            for payload in [&b""[..], b"a", b"ab", &[0xff; 1001][..]] {
                let frame = sample(src, dst, payload);
                let bytes = frame.encode().unwrap();
                assert_eq!(UdpFrame::decode(&bytes).unwrap(), frame);
            }
        }
    }

    #[test]
    fn checksums_match_an_independent_computation() {
        // 10.0.0.1:4000 → 10.0.0.2:9000, payload "hi": checksums computed independently (Python, RFC 1071).
        let bytes = sample("10.0.0.1:4000", "10.0.0.2:9000", b"hi")
            .encode()
            .unwrap();
        assert_eq!(&bytes[24..26], &[0x26, 0xcd], "IPv4 header checksum");
        assert_eq!(&bytes[40..42], &[0x50, 0xa6], "UDP checksum");
    }

    #[test]
    fn decode_rejects_corruption_and_truncation() {
        let good = sample("10.0.0.1:4000", "10.0.0.2:9000", b"payload")
            .encode()
            .unwrap();
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            UdpFrame::decode(&bad),
            Err(FrameError::BadChecksum { which: "UDP", .. })
        ));
        let mut bad = good.clone();
        bad[22] ^= 1; // TTL
        assert!(matches!(
            UdpFrame::decode(&bad),
            Err(FrameError::BadChecksum {
                which: "IPv4 header",
                ..
            })
        ));
        for cut in 0..good.len() {
            assert!(UdpFrame::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 8]);
        assert!(
            UdpFrame::decode(&padded).is_ok(),
            "Ethernet padding is ignored"
        );
        assert!(matches!(
            sample("10.0.0.1:1", "[fd00::2]:2", b"").encode(),
            Err(FrameError::MixedFamilies { .. })
        ));
    }
}
