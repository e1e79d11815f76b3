//! The request code run over a byte buffer that behaves like an XDP frame.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::wire::FLAG_RESPONSE;

/// A frame in a fixed-size buffer with kernel-like headroom and limited tailroom.
pub(crate) struct BufFrame {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

/// The headroom XDP guarantees.
const HEADROOM: usize = 256;

impl BufFrame {
    pub(crate) fn new(packet: &[u8], tailroom: usize) -> BufFrame {
        BufFrame::with_room(packet, HEADROOM, tailroom)
    }
    fn with_room(packet: &[u8], headroom: usize, tailroom: usize) -> BufFrame {
        let mut buf = vec![0xAA; headroom + packet.len() + tailroom];
        buf[headroom..headroom + packet.len()].copy_from_slice(packet);
        BufFrame {
            buf,
            start: headroom,
            len: packet.len(),
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Frame for BufFrame {
    fn data(&self) -> usize {
        self.buf.as_ptr() as usize + self.start
    }
    fn data_end(&self) -> usize {
        self.data() + self.len
    }
    fn adjust_tail(&mut self, delta: i32) -> Result<(), HelperError> {
        let new_len = self.len as i64 + i64::from(delta);
        if new_len < ETH_LEN as i64 || self.start + new_len as usize > self.buf.len() {
            return Err(HelperError(-22));
        }
        self.len = new_len as usize;
        Ok(())
    }
    fn adjust_head(&mut self, delta: i32) -> Result<(), HelperError> {
        let new_start = self.start as i64 + i64::from(delta);
        let new_len = self.len as i64 - i64::from(delta);
        if new_start < 0 || new_len < ETH_LEN as i64 {
            return Err(HelperError(-22));
        }
        self.start = new_start as usize;
        self.len = new_len as usize;
        Ok(())
    }
    fn load_bytes(&self, offset: u32, dst: &mut [u8]) -> Result<(), HelperError> {
        let from = self
            .bytes()
            .get(offset as usize..offset as usize + dst.len());
        dst.copy_from_slice(from.ok_or(HelperError(-14))?);
        Ok(())
    }
    fn store_bytes(&mut self, offset: u32, src: &[u8]) -> Result<(), HelperError> {
        let at = offset as usize;
        if at + src.len() > self.len {
            return Err(HelperError(-14));
        }
        let start = self.start;
        self.buf[start + at..start + at + src.len()].copy_from_slice(src);
        Ok(())
    }
    fn csum_partial(&self, addr: usize, len: u32) -> Result<u32, HelperError> {
        assert!(len.is_multiple_of(4) && len as usize <= CSUM_CHUNK);
        let offset = addr - self.data();
        self.csum_bytes(&self.bytes()[offset..offset + len as usize])
    }
    fn csum_bytes(&self, bytes: &[u8]) -> Result<u32, HelperError> {
        assert!(bytes.len().is_multiple_of(4) && bytes.len() <= CSUM_CHUNK);
        let sum: u64 = bytes
            .chunks(2)
            .map(|w| u64::from(u16::from_ne_bytes([w[0], w[1]])))
            .sum();
        Ok(u32::from(fold(sum)))
    }
}

/// Internet checksum over `bytes` as big-endian words; 0xffff means "sums correctly".
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).copied().map(u64::from).unwrap_or(0);
        sum += hi | lo;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0xC1];
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x5E];
const V4_CLIENT: [u8; 4] = [10, 0, 0, 1];
const V4_SERVER: [u8; 4] = [10, 0, 0, 2];
const V6_CLIENT: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_SERVER: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const CLIENT_PORT: u16 = 40_000;

pub(crate) fn udp_payload(lambda_id: u32, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut p = LambdaHeader::request(lambda_id, request_id)
        .as_bytes()
        .to_vec();
    p.extend_from_slice(body);
    p
}

fn udp_segment(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    s.extend_from_slice(&dst_port.to_be_bytes());
    s.extend_from_slice(&((UDP_LEN + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]); // no checksum: XDP must not care
    s.extend_from_slice(payload);
    s
}

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut p = MAC_SERVER.to_vec();
    p.extend_from_slice(&MAC_CLIENT);
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

fn ipv4_packet_with(dst_port: u16, payload: &[u8], options: &[u8], frag: u16) -> Vec<u8> {
    let udp = udp_segment(dst_port, payload);
    let ihl = (20 + options.len()) / 4;
    let mut ip = vec![0x40 | ihl as u8, 0];
    ip.extend_from_slice(&((ihl * 4 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[17, IPPROTO_UDP, 0, 0]);
    ip.extend_from_slice(&V4_CLIENT);
    ip.extend_from_slice(&V4_SERVER);
    ip.extend_from_slice(options);
    let check = !ones_sum(&ip);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let mut p = ethernet(ETH_P_IPV4);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&udp);
    p
}

pub(crate) fn ipv4_packet(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_packet_with(dst_port, payload, &[], 0x4000)
}

fn ipv6_packet(dst_port: u16, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let udp = udp_segment(dst_port, payload);
    let mut p = ethernet(ETH_P_IPV6);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next_header, 9]);
    p.extend_from_slice(&V6_CLIENT);
    p.extend_from_slice(&V6_SERVER);
    p.extend_from_slice(&udp);
    p
}

fn parse(packet: &[u8]) -> Option<Request> {
    Request::parse(&BufFrame::new(packet, 0), 9000, LambdaMatch::Any)
}

/// Checks everything a receiving kernel checks, and the λ response fields.
fn assert_valid_ipv4_response(out: &[u8], body: &[u8], status: Status, ihl: usize) {
    assert_eq!(&out[0..6], &MAC_CLIENT, "destination MAC is the client's");
    assert_eq!(&out[6..12], &MAC_SERVER);
    let ip = &out[14..14 + ihl];
    assert_eq!(ones_sum(ip), 0xffff, "IPv4 header checksum");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        out.len() - 14,
        "total length"
    );
    assert_eq!(ip[8], REPLY_TTL);
    assert_eq!(&ip[12..16], &V4_SERVER);
    assert_eq!(&ip[16..20], &V4_CLIENT);
    let udp = &out[14 + ihl..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    assert_eq!(ones_sum(&pseudo), 0xffff, "UDP checksum");
    assert_ne!(&udp[6..8], &[0, 0], "UDP checksum present");
    assert_lambda_response(udp, body, status);
}

fn assert_lambda_response(udp: &[u8], body: &[u8], status: Status) {
    assert_eq!(
        u16::from_be_bytes([udp[0], udp[1]]),
        9000,
        "source port is the served port"
    );
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), CLIENT_PORT);
    assert_eq!(
        usize::from(u16::from_be_bytes([udp[4], udp[5]])),
        udp.len(),
        "UDP length"
    );
    let header = LambdaHeader::decode(&udp[8..]).unwrap();
    assert!(header.is_response());
    assert_eq!(header.flags(), FLAG_RESPONSE);
    assert_eq!(header.status(), Some(status));
    assert_eq!(header.lambda_id(), 7);
    assert_eq!(header.request_id(), 0xfeed_beef);
    assert_eq!(&udp[8 + HEADER_LEN..], body);
}

#[test]
fn parses_an_ipv4_request() {
    let packet = ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, b"index.html"));
    let request = parse(&packet).expect("a λ request");
    assert_eq!(request.ip_version(), IpVersion::V4);
    assert_eq!(request.lambda_id(), 7);
    assert_eq!(request.request_id(), 0xfeed_beef);
    assert_eq!((request.frag_index(), request.frag_count()), (0, 1));
    assert_eq!(request.body_len(), 10);
    assert_eq!(request.body_offset(), 14 + 20 + 8 + 24);
    let frame = BufFrame::new(&packet, 0);
    let mut name = [0u8; 64];
    assert_eq!(request.read_body(&frame, 0, &mut name), Ok(10));
    assert_eq!(&name[..10], b"index.html");
    let mut tail = [0u8; 4];
    assert_eq!(request.read_body(&frame, 6, &mut tail), Ok(4));
    assert_eq!(&tail, b"html");
    assert_eq!(request.read_body(&frame, 10, &mut tail), Ok(0));
    assert_eq!(
        request.read_body(&frame, 11, &mut tail),
        Err(BodyError::OutOfRange)
    );
}

#[test]
fn replies_over_ipv4_growing_shrinking_and_keeping_size() {
    for body in [
        &b""[..],
        b"x",
        b"hi!",
        b"index.html",
        &[0x5a; 700][..],
        &[7; MAX_BODY][..],
    ] {
        let packet = ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, b"index.html"));
        let mut frame = BufFrame::new(&packet, 2048);
        let request = parse(&packet).unwrap();
        assert_eq!(request.reply(&mut frame, Status::Ok, body), Verdict::Reply);
        assert_valid_ipv4_response(frame.bytes(), body, Status::Ok, 20);
    }
}

#[test]
fn replies_over_ipv4_with_options_and_ethernet_padding() {
    let options = [0x94, 0x04, 0, 0]; // router alert
    let mut packet = ipv4_packet_with(9000, &udp_payload(7, 0xfeed_beef, b"ab"), &options, 0);
    packet.extend_from_slice(&[0; 6]); // padding a NIC adds to reach the minimum frame size
    let request = parse(&packet).expect("options are fine");
    assert_eq!(request.body_len(), 2, "padding is not body");
    let mut frame = BufFrame::new(&packet, 64);
    assert_eq!(
        request.reply(&mut frame, Status::NotFound, b""),
        Verdict::Reply
    );
    assert_valid_ipv4_response(frame.bytes(), b"", Status::NotFound, 24);
}

/// Every body length a reply can have, behind the shortest and the longest IPv4 header: the
/// checksum takes a different set of chunks, halves, quarters and tail bytes for each.
#[test]
fn every_body_length_gets_valid_checksums() {
    let body: Vec<u8> = (0..MAX_BODY).map(|i| (i * 7 + 3) as u8).collect();
    for options in [&[][..], &[1; 40][..]] {
        let packet = ipv4_packet_with(9000, &udp_payload(7, 0xfeed_beef, b"x"), options, 0);
        let request = parse(&packet).expect("a λ request");
        for len in 0..=MAX_BODY {
            let mut frame = BufFrame::new(&packet, 2048);
            assert_eq!(
                request.reply(&mut frame, Status::Ok, &body[..len]),
                Verdict::Reply
            );
            assert_valid_ipv4_response(frame.bytes(), &body[..len], Status::Ok, 20 + options.len());
        }
    }
}

/// `udp_checksum` on datagrams of every length from 8 to 100 bytes, IPv4 and IPv6, as a
/// lambda that builds its own packet calls it (the memcached client's requests are often
/// shorter than the 32-byte window the last bytes are read from).
#[test]
fn udp_checksum_is_right_for_short_and_odd_datagrams() {
    for len in 0..=92 {
        let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
        for (packet, ip_version, udp_offset) in [
            (ipv4_packet(9000, &payload), IpVersion::V4, 34),
            (ipv6_packet(9000, IPPROTO_UDP, &payload), IpVersion::V6, 54),
        ] {
            let frame = BufFrame::new(&packet, 0);
            let udp_len = (UDP_LEN + len) as u16;
            let check = udp_checksum(&frame, ip_version, udp_offset, udp_len).unwrap();
            let mut pseudo = match ip_version {
                IpVersion::V4 => {
                    let mut p = packet[26..34].to_vec();
                    p.extend_from_slice(&[0, IPPROTO_UDP]);
                    p.extend_from_slice(&udp_len.to_be_bytes());
                    p
                }
                IpVersion::V6 => {
                    let mut p = packet[22..54].to_vec();
                    p.extend_from_slice(&u32::from(udp_len).to_be_bytes());
                    p.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
                    p
                }
            };
            let mut udp = packet[udp_offset..].to_vec();
            udp[6..8].copy_from_slice(&check.to_ne_bytes());
            pseudo.extend_from_slice(&udp);
            assert_eq!(
                ones_sum(&pseudo),
                0xffff,
                "{ip_version:?}, {len}-byte payload"
            );
        }
    }
}

/// A request whose IPv4 header checksum is wrong, with or without options, is not answered.
#[test]
fn a_bad_ipv4_header_checksum_is_not_a_request() {
    for options in [&[][..], &[1; 4][..], &[1; 40][..]] {
        let mut packet = ipv4_packet_with(9000, &udp_payload(7, 1, b"x"), options, 0);
        assert!(parse(&packet).is_some());
        // The last header byte: an option byte, or the destination address's.
        packet[14 + 20 + options.len() - 1] ^= 0x10;
        assert!(parse(&packet).is_none(), "options {}", options.len());
    }
}

#[test]
fn replies_over_ipv6_with_a_valid_checksum() {
    for body in [&b"odd"[..], b"even", &[0xff; 1000][..]] {
        let packet = ipv6_packet(
            9000,
            IPPROTO_UDP,
            &udp_payload(7, 0xfeed_beef, b"index.html"),
        );
        let request = parse(&packet).expect("a λ request over IPv6");
        assert_eq!(request.ip_version(), IpVersion::V6);
        let mut frame = BufFrame::new(&packet, 2048);
        assert_eq!(request.reply(&mut frame, Status::Ok, body), Verdict::Reply);
        let out = frame.bytes();
        assert_eq!(&out[0..6], &MAC_CLIENT);
        let ip = &out[14..54];
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            out.len() - 54
        );
        assert_eq!(ip[7], REPLY_TTL);
        assert_eq!(&ip[8..24], &V6_SERVER);
        assert_eq!(&ip[24..40], &V6_CLIENT);
        let udp = &out[54..];
        let mut pseudo = ip[8..40].to_vec();
        pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
        pseudo.extend_from_slice(udp);
        assert_eq!(ones_sum(&pseudo), 0xffff, "UDP checksum over IPv6");
        assert_lambda_response(udp, body, Status::Ok);
    }
}

#[test]
fn too_large_or_no_tailroom_becomes_an_empty_too_large() {
    let packet = ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, b"index.html"));
    let request = parse(&packet).unwrap();
    let mut frame = BufFrame::new(&packet, 4096);
    assert_eq!(
        request.reply(&mut frame, Status::Ok, &[1; MAX_BODY + 1]),
        Verdict::Reply
    );
    assert_valid_ipv4_response(frame.bytes(), b"", Status::TooLarge, 20);

    let mut cramped = BufFrame::with_room(&packet, 64, 16);
    assert_eq!(
        request.reply(&mut cramped, Status::Ok, &[1; 100]),
        Verdict::Reply
    );
    assert_valid_ipv4_response(cramped.bytes(), b"", Status::TooLarge, 20);
}

#[test]
fn without_tailroom_the_reply_grows_into_the_headroom() {
    let body = [0x42; 200];
    for packet in [
        ipv4_packet_with(
            9000,
            &udp_payload(7, 0xfeed_beef, b"index.html"),
            &[1, 1, 1, 0],
            0,
        ),
        ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, b"index.html")),
    ] {
        let ihl = usize::from(packet[14] & 0x0f) * 4;
        let request = parse(&packet).unwrap();
        let mut frame = BufFrame::new(&packet, 0);
        assert_eq!(request.reply(&mut frame, Status::Ok, &body), Verdict::Reply);
        assert_valid_ipv4_response(frame.bytes(), &body, Status::Ok, ihl);
        assert_eq!(
            frame.start,
            HEADROOM - (body.len() - 10),
            "grew at the head"
        );
    }
}

#[test]
fn write_body_edits_in_place_and_reply_in_place_keeps_it() {
    for packet in [
        ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, b"shout this")),
        ipv6_packet(
            9000,
            IPPROTO_UDP,
            &udp_payload(7, 0xfeed_beef, b"shout this"),
        ),
    ] {
        let request = parse(&packet).unwrap();
        let mut frame = BufFrame::new(&packet, 0);
        let mut body = [0u8; 10];
        assert_eq!(request.read_body(&frame, 0, &mut body), Ok(10));
        body.make_ascii_uppercase();
        assert_eq!(request.write_body(&mut frame, 0, &body), Ok(10));
        assert_eq!(request.write_body(&mut frame, 9, b"!"), Ok(1));
        assert_eq!(
            request.write_body(&mut frame, 9, b"!!"),
            Err(BodyError::OutOfRange)
        );
        assert_eq!(
            request.write_body(&mut frame, 11, b""),
            Err(BodyError::OutOfRange)
        );
        assert_eq!(
            request.reply_in_place(&mut frame, Status::Ok),
            Verdict::Reply
        );
        let out = frame.bytes();
        if request.ip_version() == IpVersion::V4 {
            assert_valid_ipv4_response(out, b"SHOUT THI!", Status::Ok, 20);
        } else {
            assert_eq!(&out[out.len() - 10..], b"SHOUT THI!");
        }
    }
    // A body longer than one reply may carry (a jumbo frame) is answered TOO_LARGE, empty.
    let jumbo = ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, &[b'j'; MAX_BODY + 1]));
    let request = parse(&jumbo).unwrap();
    let mut frame = BufFrame::new(&jumbo, 0);
    assert_eq!(
        request.reply_in_place(&mut frame, Status::Ok),
        Verdict::Reply
    );
    assert_valid_ipv4_response(frame.bytes(), b"", Status::TooLarge, 20);
    // Ethernet padding is not echoed.
    let mut padded = ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, b"hi"));
    padded.extend_from_slice(&[0; 10]);
    let request = parse(&padded).unwrap();
    let mut frame = BufFrame::new(&padded, 0);
    assert_eq!(
        request.reply_in_place(&mut frame, Status::Ok),
        Verdict::Reply
    );
    assert_valid_ipv4_response(frame.bytes(), b"hi", Status::Ok, 20);
}

#[test]
fn reply_in_place_truncated_shrinks_the_body() {
    let packet = ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, b"abcdefghij"));
    let request = parse(&packet).unwrap();
    let mut frame = BufFrame::new(&packet, 0);
    assert_eq!(request.write_body(&mut frame, 0, b"XYZ"), Ok(3));
    assert_eq!(
        request.reply_in_place_truncated(&mut frame, Status::Ok, 4),
        Verdict::Reply
    );
    assert_valid_ipv4_response(frame.bytes(), b"XYZd", Status::Ok, 20);
    // Past the request body: nothing to keep, so TOO_LARGE and empty.
    let mut frame = BufFrame::new(&packet, 64);
    assert_eq!(
        request.reply_in_place_truncated(&mut frame, Status::Ok, 11),
        Verdict::Reply
    );
    assert_valid_ipv4_response(frame.bytes(), b"", Status::TooLarge, 20);
}

#[test]
fn non_requests_are_not_parsed() {
    let payload = udp_payload(7, 1, b"index.html");
    let good = ipv4_packet(9000, &payload);
    assert!(parse(&good).is_some());

    assert!(parse(&ipv4_packet(9001, &payload)).is_none(), "other port");
    assert!(parse(&[]).is_none(), "empty");
    for cut in 0..good.len() - 10 {
        assert!(parse(&good[..cut]).is_none(), "truncated to {cut} bytes");
    }
    let mut bad_magic = payload.clone();
    bad_magic[0] = b'X';
    assert!(parse(&ipv4_packet(9000, &bad_magic)).is_none(), "bad magic");
    let mut bad_version = payload.clone();
    bad_version[2] = 2;
    assert!(
        parse(&ipv4_packet(9000, &bad_version)).is_none(),
        "bad version"
    );
    let mut response = payload.clone();
    response[3] = FLAG_RESPONSE;
    assert!(
        parse(&ipv4_packet(9000, &response)).is_none(),
        "a response is never answered"
    );
    assert!(
        parse(&ipv4_packet(9000, &payload[..20])).is_none(),
        "short λ header"
    );
    assert!(
        parse(&ipv4_packet_with(9000, &payload, &[], 0x2000)).is_none(),
        "MF fragment"
    );
    assert!(
        parse(&ipv4_packet_with(9000, &payload, &[], 0x0010)).is_none(),
        "later fragment"
    );
    let mut bad_check = good.clone();
    bad_check[24] ^= 0xff;
    assert!(parse(&bad_check).is_none(), "bad IPv4 header checksum");
    let mut tcp = good.clone();
    tcp[23] = 6;
    assert!(parse(&tcp).is_none(), "not UDP");
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert!(parse(&arp).is_none(), "not IP");
    let mut long_udp_len = good.clone();
    long_udp_len[38..40].copy_from_slice(&((good.len() - 34 + 1) as u16).to_be_bytes());
    assert!(parse(&long_udp_len).is_none(), "UDP length past the frame");
    assert!(
        parse(&ipv6_packet(9000, 0, &payload)).is_none(),
        "IPv6 extension header"
    );
}

#[test]
fn lambda_id_matching() {
    let packet = ipv4_packet(9000, &udp_payload(7, 1, b""));
    let frame = BufFrame::new(&packet, 0);
    assert!(Request::parse(&frame, 9000, LambdaMatch::Id(7)).is_some());
    assert!(Request::parse(&frame, 9000, LambdaMatch::Id(8)).is_none());
    assert!(Request::parse(&frame, 9000, LambdaMatch::Any).is_some());
}

#[test]
fn garbage_never_panics() {
    // A fixed-seed generator: every run sees the same 20,000 mutated packets.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = ipv4_packet(9000, &udp_payload(7, 1, b"index.html"));
    for _ in 0..20_000 {
        let mut packet = base.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % packet.len();
            packet[at] = next() as u8;
        }
        packet.truncate((next() as usize) % (packet.len() + 1));
        if let Some(request) = parse(&packet) {
            let mut frame = BufFrame::new(&packet, 512);
            let verdict = request.reply(&mut frame, Status::Ok, b"ok");
            assert_eq!(verdict, Verdict::Reply);
        }
    }
}

/// The NIC build's shared reply function rebuilds what it needs of the request from values:
/// it must get back the parsed request's IP version and UDP offset, and refuse what no parse
/// produces.
#[cfg(feature = "nic")]
#[test]
fn nic_requests_rebuilt_for_the_reply_are_the_parsed_ones() {
    for packet in [
        ipv4_packet(9000, &udp_payload(7, 0x1234, b"hello")),
        ipv4_packet_with(9000, &udp_payload(7, 9, b"x"), &[1; 40], 0),
        ipv6_packet(9000, IPPROTO_UDP, &udp_payload(7, 9, &[0xab; 1000])),
    ] {
        let parsed = parse(&packet).unwrap();
        let ip = match parsed.ip_version() {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        };
        let rebuilt = Request::for_reply(ip, parsed.udp_offset()).unwrap();
        assert_eq!(rebuilt.udp_offset(), parsed.udp_offset());
        assert_eq!(rebuilt.ip_version(), parsed.ip_version());
    }
    assert!(Request::for_reply(5, 34).is_none());
    assert!(Request::for_reply(4, 14 + 61).is_none());
}
