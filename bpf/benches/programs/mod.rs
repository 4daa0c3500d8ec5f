//! The three benchmark programs (MAC swap, UDP parse, 256-byte sum), their
//! packets and the instruction builders they are written with, shared by
//! `benches/interp.rs` and `benches/jit.rs`.
#![allow(dead_code)]

use sluice_bpf::isa::{self, AluOp, ByteOrder, Insn, Instruction, JmpOp, Reg, Size, Source, Width};

/// `XDP_DROP`, returned by `mac_swap` when the packet is too short.
pub const XDP_DROP: i32 = 1;
/// `XDP_TX`, returned by `mac_swap` after the swap.
pub const XDP_TX: i32 = 3;
/// What `parse_udp` returns when a check fails (`(u32)-1`).
pub const SENTINEL: u64 = 0xffff_ffff;
/// The UDP destination port in the `parse_udp` test packet (VXLAN).
pub const UDP_DST_PORT: u16 = 4789;

/// How each VM hands the packet to the program.
#[derive(Clone, Copy, Debug)]
pub enum Abi {
    /// Sluice's `run_xdp`: r1 points to Linux's `struct xdp_md`, whose
    /// 32-bit `data` (offset 0) and `data_end` (offset 4) are usable
    /// pointers, so the program reads them with `ldxw`.
    Sluice,
    /// rbpf's `EbpfVmMbuff`: r1 points to a metadata buffer into which the
    /// caller writes 64-bit `data` and `data_end` pointers (we use offsets 0
    /// and 8, as `EbpfVmFixedMbuff::new(prog, 0, 8)` would), read with
    /// `ldxdw`.
    Rbpf,
}

// ---------------------------------------------------------------------------
// A few instruction builders, so the programs below read like `llvm-objdump`.

pub const R0: Reg = Reg::R0;
pub const R1: Reg = Reg::R1;
pub const R2: Reg = reg(2);
pub const R3: Reg = reg(3);
pub const R4: Reg = reg(4);
pub const R5: Reg = reg(5);

pub const fn reg(n: u8) -> Reg {
    match Reg::new(n) {
        Some(r) => r,
        None => panic!("no such register"),
    }
}

pub fn alu64(op: AluOp, dst: Reg, src: Source) -> Instruction {
    Instruction::Alu {
        width: Width::W64,
        op,
        dst,
        src,
    }
}

/// `dst = imm` (64-bit).
pub fn mov(dst: Reg, imm: i32) -> Instruction {
    alu64(AluOp::Mov, dst, Source::Imm(imm))
}

/// `dst = src` (64-bit).
pub fn mov_r(dst: Reg, src: Reg) -> Instruction {
    alu64(AluOp::Mov, dst, Source::Reg(src))
}

/// `dst = (u32)imm`.
pub fn mov32(dst: Reg, imm: i32) -> Instruction {
    Instruction::Alu {
        width: Width::W32,
        op: AluOp::Mov,
        dst,
        src: Source::Imm(imm),
    }
}

/// `dst += imm`.
pub fn add(dst: Reg, imm: i32) -> Instruction {
    alu64(AluOp::Add, dst, Source::Imm(imm))
}

/// `dst += src`.
pub fn add_r(dst: Reg, src: Reg) -> Instruction {
    alu64(AluOp::Add, dst, Source::Reg(src))
}

/// `dst = *(size *)(src + off)`.
pub fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Instruction {
    Instruction::Load {
        size,
        signed: false,
        dst,
        src,
        off,
    }
}

/// `*(size *)(dst + off) = src`.
pub fn stx(size: Size, dst: Reg, off: i16, src: Reg) -> Instruction {
    Instruction::Store {
        size,
        dst,
        off,
        src: Source::Reg(src),
    }
}

/// `if dst <op> src goto +off` (64-bit).
pub fn jmp(op: JmpOp, dst: Reg, src: Source, off: i16) -> Instruction {
    Instruction::Jmp {
        width: Width::W64,
        op,
        dst,
        src,
        off,
    }
}

pub fn exit() -> Instruction {
    Instruction::Exit
}

// ---------------------------------------------------------------------------
// The programs

/// Loads `r2 = data`, `r3 = data_end` from the context in r1: the only part
/// of the bytecode that differs between the two VMs.
pub fn prologue(abi: Abi) -> [Instruction; 2] {
    match abi {
        Abi::Sluice => [ldx(Size::W, R2, R1, 0), ldx(Size::W, R3, R1, 4)],
        Abi::Rbpf => [ldx(Size::DW, R2, R1, 0), ldx(Size::DW, R3, R1, 8)],
    }
}

/// `mac_swap` after the prologue (r2 = data, r3 = data_end).
pub fn mac_swap() -> Vec<Instruction> {
    let mut p = vec![
        mov(R0, XDP_DROP),
        // if (data + sizeof(struct ethhdr) > data_end) return XDP_DROP;
        mov_r(R4, R2),
        add(R4, 14),
        jmp(JmpOp::Gt, R4, Source::Reg(R3), 25), // goto exit
    ];
    // Byte i of h_dest <-> byte i of h_source.
    for i in 0..6 {
        p.extend([
            ldx(Size::B, R4, R2, i),
            ldx(Size::B, R5, R2, 6 + i),
            stx(Size::B, R2, i, R5),
            stx(Size::B, R2, 6 + i, R4),
        ]);
    }
    p.extend([mov(R0, XDP_TX), exit()]);
    p
}

/// `parse_udp` after the prologue (r2 = data, r3 = data_end).
pub fn parse_udp() -> Vec<Instruction> {
    let out = |from: usize| 21 - (from as i16 + 1); // offset to the final exit
    vec![
        /* 0 */ mov32(R0, -1), // r0 = SENTINEL
        // Ethernet: 14 bytes, h_proto == htons(ETH_P_IP).
        /* 1 */ mov_r(R4, R2),
        /* 2 */ add(R4, 14),
        /* 3 */ jmp(JmpOp::Gt, R4, Source::Reg(R3), out(3)),
        /* 4 */ ldx(Size::H, R4, R2, 12),
        /* 5 */ jmp(JmpOp::Ne, R4, Source::Imm(0x0008), out(5)), // 0x0800, loaded LE
        // IPv4: the fixed 20 bytes, protocol == IPPROTO_UDP.
        /* 6 */ mov_r(R4, R2),
        /* 7 */ add(R4, 14 + 20),
        /* 8 */ jmp(JmpOp::Gt, R4, Source::Reg(R3), out(8)),
        /* 9 */ ldx(Size::B, R4, R2, 14 + 9),
        /* 10 */ jmp(JmpOp::Ne, R4, Source::Imm(17), out(10)),
        // ihl * 4 >= 20
        /* 11 */ ldx(Size::B, R4, R2, 14),
        /* 12 */ alu64(AluOp::And, R4, Source::Imm(0x0f)),
        /* 13 */ alu64(AluOp::Lsh, R4, Source::Imm(2)),
        /* 14 */ jmp(JmpOp::Lt, R4, Source::Imm(20), out(14)),
        // UDP at data + 14 + ihl * 4: its 8 bytes must be there.
        /* 15 */
        add_r(R2, R4),
        /* 16 */ mov_r(R4, R2),
        /* 17 */ add(R4, 14 + 8),
        /* 18 */ jmp(JmpOp::Gt, R4, Source::Reg(R3), out(18)),
        // return bpf_ntohs(udp->dest);
        /* 19 */ ldx(Size::H, R0, R2, 14 + 2),
        /* 20 */
        Instruction::Endian {
            order: ByteOrder::Be,
            bits: 16,
            dst: R0,
        },
        /* 21 */ exit(),
    ]
}

/// `sum_256` after the prologue (r2 = data, r3 = data_end).
pub fn sum_256() -> Vec<Instruction> {
    vec![
        /* 0 */ mov(R0, 0),
        // if (data + 256 > data_end) return 0;
        /* 1 */ mov_r(R4, R2),
        /* 2 */ add(R4, 256),
        /* 3 */ jmp(JmpOp::Gt, R4, Source::Reg(R3), 6), // goto exit
        /* 4 */ mov(R4, 256),
        // do { sum += *p++; } while (--n);
        /* 5 */ ldx(Size::B, R5, R2, 0),
        /* 6 */ add_r(R0, R5),
        /* 7 */ add(R2, 1),
        /* 8 */ add(R4, -1),
        /* 9 */ jmp(JmpOp::Ne, R4, Source::Imm(0), -5), // goto 5
        /* 10 */ exit(),
    ]
}

pub fn bytecode(abi: Abi, body: &[Instruction]) -> Vec<u8> {
    let mut prog = prologue(abi).to_vec();
    prog.extend_from_slice(body);
    isa::to_bytes(&isa::encode(&prog))
}

// ---------------------------------------------------------------------------
// Packets

/// A 64-byte Ethernet/IPv4/UDP frame to `UDP_DST_PORT`.
pub fn udp_packet() -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0..6].copy_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]); // h_dest
    p[6..12].copy_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x02]); // h_source
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); // ETH_P_IP
    p[14] = 0x45; // version 4, ihl 5
    p[16..18].copy_from_slice(&50u16.to_be_bytes()); // total length
    p[22] = 64; // ttl
    p[23] = 17; // IPPROTO_UDP
    p[26..30].copy_from_slice(&[10, 0, 0, 1]);
    p[30..34].copy_from_slice(&[10, 0, 0, 2]);
    p[34..36].copy_from_slice(&12345u16.to_be_bytes()); // source port
    p[36..38].copy_from_slice(&UDP_DST_PORT.to_be_bytes());
    p[38..40].copy_from_slice(&30u16.to_be_bytes()); // UDP length
    p
}

/// 256 bytes with a known sum.
pub fn sum_packet() -> Vec<u8> {
    (0..256u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// The program as slots, prologue included.
pub fn slots(abi: Abi, body: &[Instruction]) -> Vec<Insn> {
    let mut prog = prologue(abi).to_vec();
    prog.extend_from_slice(body);
    isa::encode(&prog)
}

// ---------------------------------------------------------------------------
// The plain timing loop both benches use beside criterion.

/// Runs of `f` that take about `round` (10^4 to 5·10^6), measured after a
/// warm-up of 20,000 runs.
pub fn calibrate(f: &mut dyn FnMut() -> u64, round: std::time::Duration) -> u64 {
    use std::hint::black_box;
    for _ in 0..20_000 {
        black_box(f());
    }
    let probe = std::time::Instant::now();
    for _ in 0..2_000 {
        black_box(f());
    }
    let per_run = probe.elapsed().as_secs_f64() / 2_000.0;
    ((round.as_secs_f64() / per_run) as u64).clamp(10_000, 5_000_000)
}

/// ns per run over `n` runs of `f`.
pub fn time_runs(f: &mut dyn FnMut() -> u64, n: u64) -> f64 {
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    start.elapsed().as_secs_f64() * 1e9 / n as f64
}
