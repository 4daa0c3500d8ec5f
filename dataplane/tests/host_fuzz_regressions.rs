//! Replays the PASS-path fuzz harness (`dataplane/fuzz/src/harness.rs`) on
//! stable: every input kept in `dataplane/fuzz/regressions/` (crashes the
//! fuzzer found, kept as they are) and a few hand-made inputs that walk
//! the same paths (truncations, lying lengths, checksummed garbage for
//! every protocol the stack speaks).

#[path = "../fuzz/src/harness.rs"]
mod harness;

/// One frame of harness input: length, flags, bytes.
fn frame(fix: bool, bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.push(u8::from(fix));
    v.extend_from_slice(bytes);
    v
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(l4);
    ip
}

fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    ip.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    ip.extend_from_slice(l4);
    ip
}

#[test]
fn kept_fuzz_inputs_replay_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "md") {
                continue;
            }
            let data = std::fs::read(e.path()).unwrap();
            harness::run(&data);
            n += 1;
        }
    }
    eprintln!("{n} kept inputs replayed");
}

#[test]
fn hand_made_inputs_walk_every_protocol() {
    let mut tcp_syn = vec![0u8; 20];
    tcp_syn[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp_syn[2..4].copy_from_slice(&9100u16.to_be_bytes());
    tcp_syn[12] = 5 << 4;
    tcp_syn[13] = 0x02;
    tcp_syn[14..16].copy_from_slice(&8192u16.to_be_bytes());
    let mut tcp_opts = tcp_syn.clone();
    tcp_opts[12] = 15 << 4; // data offset beyond the segment
    let udp = [
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd',
    ];
    let mut udp_long = udp;
    udp_long[5] = 0xff;
    let echo = [8, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3];
    let echo6 = [128, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3];
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    ns.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 2]);
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 2];
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    let mut input = Vec::new();
    for fix in [false, true] {
        for f in [
            eth(0x0806, &arp),
            eth(0x0806, &arp[..20]),
            eth(0x0800, &ipv4(6, &tcp_syn)),
            eth(0x0800, &ipv4(6, &tcp_opts)),
            eth(0x0800, &ipv4(6, &tcp_syn[..10])),
            eth(0x0800, &ipv4(17, &udp)),
            eth(0x0800, &ipv4(17, &udp_long)),
            eth(0x0800, &ipv4(1, &echo)),
            eth(0x0800, &ipv4(99, &echo)),
            eth(0x86dd, &ipv6(58, &echo6)),
            eth(0x86dd, &ipv6(58, &ns)),
            eth(0x86dd, &ipv6(6, &tcp_syn)),
            eth(0x86dd, &ipv6(0, &[6, 0, 1, 4, 0, 0, 0, 0])),
            eth(0x86dd, &ipv6(44, &[17, 0, 0, 1, 0, 0, 0, 1])),
        ] {
            // Whole, and cut at every length.
            input.extend(frame(fix, &f));
            for cut in (0..f.len()).step_by(3) {
                input.extend(frame(fix, &f[..cut]));
            }
        }
    }
    harness::run(&input);
    // The same again: the stack keeps state across inputs.
    harness::run(&input);
}
