//! A small x86-64 encoder: exactly the instruction forms the JIT emits,
//! each one a method that appends its bytes to a buffer.
//!
//! Nothing here knows about eBPF. Every method documents the Intel SDM form
//! it encodes (`REX.W 01 /r`, ...); the unit tests at the bottom pin the
//! bytes of every form against an independent assembler's output
//! (GNU `as`), including the awkward registers: `rsp`/`r12` as a base need a
//! SIB byte, `rbp`/`r13` as a base need a displacement, and byte access to
//! `sil`/`dil`/`bpl`/`spl` needs a REX prefix even when no extension bit is
//! set.

/// A general-purpose register, by its hardware number (0-15).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Reg(pub u8);

pub(crate) const RAX: Reg = Reg(0);
pub(crate) const RCX: Reg = Reg(1);
pub(crate) const RDX: Reg = Reg(2);
pub(crate) const RBX: Reg = Reg(3);
pub(crate) const RSP: Reg = Reg(4);
pub(crate) const RBP: Reg = Reg(5);
pub(crate) const RSI: Reg = Reg(6);
pub(crate) const RDI: Reg = Reg(7);
pub(crate) const R8: Reg = Reg(8);
pub(crate) const R9: Reg = Reg(9);
pub(crate) const R10: Reg = Reg(10);
pub(crate) const R11: Reg = Reg(11);
pub(crate) const R12: Reg = Reg(12);
pub(crate) const R13: Reg = Reg(13);
pub(crate) const R14: Reg = Reg(14);
pub(crate) const R15: Reg = Reg(15);

impl Reg {
    /// The low three bits, as they go into ModRM/SIB/opcode.
    fn low(self) -> u8 {
        self.0 & 7
    }

    /// Whether the register needs a REX extension bit.
    fn ext(self) -> bool {
        self.0 >= 8
    }

    /// Whether byte access needs a bare REX to mean `spl/bpl/sil/dil`
    /// rather than `ah/ch/dh/bh`.
    fn byte_needs_rex(self) -> bool {
        (4..8).contains(&self.0)
    }
}

/// Condition codes (the low nibble of `Jcc`/`SETcc`/`CMOVcc`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Cond {
    /// Below (unsigned `<`), CF=1.
    B = 0x2,
    /// Above or equal (unsigned `>=`), CF=0.
    Ae = 0x3,
    /// Equal, ZF=1.
    E = 0x4,
    /// Not equal, ZF=0.
    Ne = 0x5,
    /// Below or equal (unsigned `<=`).
    Be = 0x6,
    /// Above (unsigned `>`).
    A = 0x7,
    /// Less (signed `<`).
    L = 0xc,
    /// Greater or equal (signed `>=`).
    Ge = 0xd,
    /// Less or equal (signed `<=`).
    Le = 0xe,
    /// Greater (signed `>`).
    G = 0xf,
}

/// The two-operand ALU operations with a `op r/m, r` form and a
/// `81 /ext` immediate form: (opcode of `op r/m, r`, ModRM extension).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Alu {
    Add,
    Or,
    And,
    Sub,
    Xor,
    Cmp,
}

impl Alu {
    fn rm_r(self) -> u8 {
        match self {
            Alu::Add => 0x01,
            Alu::Or => 0x09,
            Alu::And => 0x21,
            Alu::Sub => 0x29,
            Alu::Xor => 0x31,
            Alu::Cmp => 0x39,
        }
    }

    fn ext(self) -> u8 {
        match self {
            Alu::Add => 0,
            Alu::Or => 1,
            Alu::And => 4,
            Alu::Sub => 5,
            Alu::Xor => 6,
            Alu::Cmp => 7,
        }
    }
}

/// Shift operations: the ModRM extension of `C1 /ext ib` and `D3 /ext`,
/// and the mandatory prefix of the BMI2 `*X` form (`pp` field of VEX).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shift {
    Shl,
    Shr,
    Sar,
}

impl Shift {
    fn ext(self) -> u8 {
        match self {
            Shift::Shl => 4,
            Shift::Shr => 5,
            Shift::Sar => 7,
        }
    }

    /// VEX.pp: 66 (01) for SHLX, F2 (11) for SHRX, F3 (10) for SARX.
    fn vex_pp(self) -> u8 {
        match self {
            Shift::Shl => 0b01,
            Shift::Shr => 0b11,
            Shift::Sar => 0b10,
        }
    }
}

/// Operand sizes of memory accesses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Width {
    B,
    H,
    W,
    Q,
}

/// The code buffer.
#[derive(Default)]
pub(crate) struct Asm {
    pub buf: Vec<u8>,
}

impl Asm {
    pub fn with_capacity(n: usize) -> Asm {
        Asm {
            buf: Vec::with_capacity(n),
        }
    }

    /// Current offset.
    #[inline]
    pub fn pos(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    fn b(&mut self, x: u8) {
        self.buf.push(x);
    }

    #[inline]
    fn d32(&mut self, x: i32) {
        self.buf.extend_from_slice(&x.to_le_bytes());
    }

    /// A REX prefix with W, and R/X/B from `reg`, `index`, `base`; emitted
    /// only when some bit is set or `force` (byte registers 4-7).
    fn rex(&mut self, w: bool, reg: u8, index: u8, base: u8, force: bool) {
        let r = (w as u8) << 3 | (reg >> 3 & 1) << 2 | (index >> 3 & 1) << 1 | (base >> 3 & 1);
        if r != 0 || force {
            self.b(0x40 | r);
        }
    }

    /// ModRM for a register-direct operand.
    fn modrm_rr(&mut self, reg: u8, rm: u8) {
        self.b(0xc0 | (reg & 7) << 3 | (rm & 7));
    }

    /// ModRM (+SIB) (+disp) for `[base + disp]`.
    fn modrm_mem(&mut self, reg: u8, base: Reg, disp: i32) {
        let r = (reg & 7) << 3;
        let need_sib = base.low() == 4; // rsp, r12
        let md = if disp == 0 && base.low() != 5 {
            0x00 // rbp/r13 with mod 00 would mean RIP-relative / no base
        } else if i8::try_from(disp).is_ok() {
            0x40
        } else {
            0x80
        };
        if need_sib {
            self.b(md | r | 4);
            self.b(0x24); // scale 1, no index, base rsp/r12
        } else {
            self.b(md | r | base.low());
        }
        match md {
            0x40 => self.b(disp as i8 as u8),
            0x80 => self.d32(disp),
            _ => {}
        }
    }

    /// `op reg, [base + disp]` or `op [base + disp], reg` with optional
    /// legacy prefix and 0F escape: the common memory-operand emitter.
    #[allow(clippy::too_many_arguments)]
    fn mem_op(
        &mut self,
        prefix: Option<u8>,
        w: bool,
        force_rex: bool,
        opcode: &[u8],
        reg: u8,
        base: Reg,
        disp: i32,
    ) {
        if let Some(p) = prefix {
            self.b(p);
        }
        self.rex(w, reg, 0, base.0, force_rex);
        for &o in opcode {
            self.b(o);
        }
        self.modrm_mem(reg, base, disp);
    }

    /// `op rm, reg` register-direct with optional prefix and 0F escape.
    fn rr_op(
        &mut self,
        prefix: Option<u8>,
        w: bool,
        force_rex: bool,
        opcode: &[u8],
        reg: Reg,
        rm: Reg,
    ) {
        if let Some(p) = prefix {
            self.b(p);
        }
        self.rex(w, reg.0, 0, rm.0, force_rex);
        for &o in opcode {
            self.b(o);
        }
        self.modrm_rr(reg.0, rm.0);
    }

    // ----------------------------------------------------------------------
    // Moves

    /// `mov dst, src` (`REX.W 89 /r`, or 32-bit `89 /r`, which zero-extends).
    pub fn mov_rr(&mut self, w64: bool, dst: Reg, src: Reg) {
        self.rr_op(None, w64, false, &[0x89], src, dst);
    }

    /// `mov r32, imm32` (`B8+r id`): zero-extends to 64 bits.
    pub fn mov_r32_imm(&mut self, dst: Reg, imm: u32) {
        self.rex(false, 0, 0, dst.0, false);
        self.b(0xb8 + dst.low());
        self.d32(imm as i32);
    }

    /// `mov r64, simm32` (`REX.W C7 /0 id`): sign-extends.
    pub fn mov_r64_simm(&mut self, dst: Reg, imm: i32) {
        self.rex(true, 0, 0, dst.0, false);
        self.b(0xc7);
        self.modrm_rr(0, dst.0);
        self.d32(imm);
    }

    /// `mov r64, imm64` (`REX.W B8+r io`), always the 10-byte form.
    pub fn mov_r64_imm64(&mut self, dst: Reg, imm: u64) {
        self.rex(true, 0, 0, dst.0, false);
        self.b(0xb8 + dst.low());
        self.buf.extend_from_slice(&imm.to_le_bytes());
    }

    /// The shortest move of a 64-bit constant: `xor r32, r32` for 0,
    /// `mov r32, imm32` below 2^32, `mov r64, simm32` for sign-extended
    /// 32-bit values, else `movabs`. Clobbers flags (xor).
    pub fn load_imm64(&mut self, dst: Reg, imm: u64) {
        if imm == 0 {
            self.alu_rr(Alu::Xor, false, dst, dst);
        } else if imm <= u64::from(u32::MAX) {
            self.mov_r32_imm(dst, imm as u32);
        } else if imm as i64 >= i64::from(i32::MIN) && imm as i64 <= i64::from(i32::MAX) {
            self.mov_r64_simm(dst, imm as i64 as i32);
        } else {
            self.mov_r64_imm64(dst, imm);
        }
    }

    /// Zero-extending load: `movzx r32, byte/word [m]`, `mov r32, [m]`,
    /// `mov r64, [m]`.
    pub fn load(&mut self, width: Width, dst: Reg, base: Reg, disp: i32) {
        match width {
            Width::B => self.mem_op(None, false, false, &[0x0f, 0xb6], dst.0, base, disp),
            Width::H => self.mem_op(None, false, false, &[0x0f, 0xb7], dst.0, base, disp),
            Width::W => self.mem_op(None, false, false, &[0x8b], dst.0, base, disp),
            Width::Q => self.mem_op(None, true, false, &[0x8b], dst.0, base, disp),
        }
    }

    /// Sign-extending load to 64 bits: `movsx r64, byte/word [m]`,
    /// `movsxd r64, dword [m]`.
    pub fn load_sx(&mut self, width: Width, dst: Reg, base: Reg, disp: i32) {
        match width {
            Width::B => self.mem_op(None, true, false, &[0x0f, 0xbe], dst.0, base, disp),
            Width::H => self.mem_op(None, true, false, &[0x0f, 0xbf], dst.0, base, disp),
            Width::W => self.mem_op(None, true, false, &[0x63], dst.0, base, disp),
            Width::Q => self.load(Width::Q, dst, base, disp),
        }
    }

    /// `mov [m], r8/r16/r32/r64`.
    pub fn store(&mut self, width: Width, base: Reg, disp: i32, src: Reg) {
        match width {
            Width::B => self.mem_op(
                None,
                false,
                src.byte_needs_rex(),
                &[0x88],
                src.0,
                base,
                disp,
            ),
            Width::H => self.mem_op(Some(0x66), false, false, &[0x89], src.0, base, disp),
            Width::W => self.mem_op(None, false, false, &[0x89], src.0, base, disp),
            Width::Q => self.mem_op(None, true, false, &[0x89], src.0, base, disp),
        }
    }

    /// `mov byte/word/dword/qword [m], imm` (`C6 /0 ib`, `66 C7 /0 iw`,
    /// `C7 /0 id`, `REX.W C7 /0 id` sign-extended).
    pub fn store_imm(&mut self, width: Width, base: Reg, disp: i32, imm: i32) {
        match width {
            Width::B => {
                self.mem_op(None, false, false, &[0xc6], 0, base, disp);
                self.b(imm as u8);
            }
            Width::H => {
                self.mem_op(Some(0x66), false, false, &[0xc7], 0, base, disp);
                self.buf.extend_from_slice(&(imm as u16).to_le_bytes());
            }
            Width::W => {
                self.mem_op(None, false, false, &[0xc7], 0, base, disp);
                self.d32(imm);
            }
            Width::Q => {
                self.mem_op(None, true, false, &[0xc7], 0, base, disp);
                self.d32(imm);
            }
        }
    }

    /// `lea r64, [base + disp]`.
    pub fn lea(&mut self, dst: Reg, base: Reg, disp: i32) {
        self.mem_op(None, true, false, &[0x8d], dst.0, base, disp);
    }

    /// `mov r64, [base + index*8]` (table load).
    pub fn load_indexed8(&mut self, dst: Reg, base: Reg, index: Reg) {
        debug_assert!(base.low() != 5 && index != RSP);
        self.rex(true, dst.0, index.0, base.0, false);
        self.b(0x8b);
        self.b((dst.low()) << 3 | 4);
        self.b(0xc0 | index.low() << 3 | base.low()); // scale 8
    }

    // ----------------------------------------------------------------------
    // Arithmetic

    /// `op dst, src` (`op r/m, r`).
    pub fn alu_rr(&mut self, op: Alu, w64: bool, dst: Reg, src: Reg) {
        self.rr_op(None, w64, false, &[op.rm_r()], src, dst);
    }

    /// `op dst, imm` (`83 /ext ib` or `81 /ext id`; sign-extended for 64).
    pub fn alu_ri(&mut self, op: Alu, w64: bool, dst: Reg, imm: i32) {
        self.rex(w64, 0, 0, dst.0, false);
        if let Ok(i) = i8::try_from(imm) {
            self.b(0x83);
            self.modrm_rr(op.ext(), dst.0);
            self.b(i as u8);
        } else {
            self.b(0x81);
            self.modrm_rr(op.ext(), dst.0);
            self.d32(imm);
        }
    }

    /// `cmp r64, [base + disp]` (`REX.W 3B /r`).
    pub fn cmp_r_mem(&mut self, a: Reg, base: Reg, disp: i32) {
        self.mem_op(None, true, false, &[0x3b], a.0, base, disp);
    }

    /// `cmp qword [base + disp], imm8` (`REX.W 83 /7 ib`).
    pub fn cmp_mem_imm8(&mut self, base: Reg, disp: i32, imm: i8) {
        self.mem_op(None, true, false, &[0x83], 7, base, disp);
        self.b(imm as u8);
    }

    /// `test dst, src` (`85 /r`).
    pub fn test_rr(&mut self, w64: bool, a: Reg, b: Reg) {
        self.rr_op(None, w64, false, &[0x85], b, a);
    }

    /// `test dst, imm32` (`F7 /0 id`, sign-extended for 64).
    pub fn test_ri(&mut self, w64: bool, a: Reg, imm: i32) {
        self.rex(w64, 0, 0, a.0, false);
        self.b(0xf7);
        self.modrm_rr(0, a.0);
        self.d32(imm);
    }

    /// `imul dst, src` (`0F AF /r`).
    pub fn imul_rr(&mut self, w64: bool, dst: Reg, src: Reg) {
        self.rr_op(None, w64, false, &[0x0f, 0xaf], dst, src);
    }

    /// `imul dst, src, imm` (`6B /r ib` or `69 /r id`).
    pub fn imul_rri(&mut self, w64: bool, dst: Reg, src: Reg, imm: i32) {
        self.rex(w64, dst.0, 0, src.0, false);
        if let Ok(i) = i8::try_from(imm) {
            self.b(0x6b);
            self.modrm_rr(dst.0, src.0);
            self.b(i as u8);
        } else {
            self.b(0x69);
            self.modrm_rr(dst.0, src.0);
            self.d32(imm);
        }
    }

    /// `neg dst` (`F7 /3`).
    pub fn neg(&mut self, w64: bool, dst: Reg) {
        self.rex(w64, 0, 0, dst.0, false);
        self.b(0xf7);
        self.modrm_rr(3, dst.0);
    }

    /// `div src` (`F7 /6`) or `idiv src` (`F7 /7`): rdx:rax / src.
    pub fn div(&mut self, w64: bool, signed: bool, src: Reg) {
        self.rex(w64, 0, 0, src.0, false);
        self.b(0xf7);
        self.modrm_rr(if signed { 7 } else { 6 }, src.0);
    }

    /// `cqo` (64) or `cdq` (32): sign-extend rax into rdx.
    pub fn cqo(&mut self, w64: bool) {
        if w64 {
            self.b(0x48);
        }
        self.b(0x99);
    }

    /// `shl/shr/sar dst, imm8` (`C1 /ext ib`).
    pub fn shift_ri(&mut self, op: Shift, w64: bool, dst: Reg, imm: u8) {
        self.rex(w64, 0, 0, dst.0, false);
        self.b(0xc1);
        self.modrm_rr(op.ext(), dst.0);
        self.b(imm);
    }

    /// `shl/shr/sar dst, cl` (`D3 /ext`).
    pub fn shift_cl(&mut self, op: Shift, w64: bool, dst: Reg) {
        self.rex(w64, 0, 0, dst.0, false);
        self.b(0xd3);
        self.modrm_rr(op.ext(), dst.0);
    }

    /// BMI2 `shlx/shrx/sarx dst, src, count`
    /// (`VEX.LZ.{66,F2,F3}.0F38.W{0,1} F7 /r`): the count is masked to 5 or 6
    /// bits, flags are untouched, and the 32-bit form zero-extends.
    pub fn shiftx(&mut self, op: Shift, w64: bool, dst: Reg, src: Reg, count: Reg) {
        self.b(0xc4);
        // R̄ X̄ B̄ and map 0F38 (00010).
        let r = u8::from(!dst.ext()) << 7;
        let x = 1 << 6;
        let bb = u8::from(!src.ext()) << 5;
        self.b(r | x | bb | 0b00010);
        // W, v̄v̄v̄v̄ (count, inverted), L=0, pp.
        self.b(u8::from(w64) << 7 | (!count.0 & 0xf) << 3 | op.vex_pp());
        self.b(0xf7);
        self.modrm_rr(dst.0, src.0);
    }

    /// `movzx r32, r16` (`0F B7 /r`).
    pub fn movzx16_rr(&mut self, dst: Reg, src: Reg) {
        self.rr_op(None, false, false, &[0x0f, 0xb7], dst, src);
    }

    /// `movsx r32/r64, r8` (`0F BE /r`), `movsx r32/r64, r16` (`0F BF /r`),
    /// `movsxd r64, r32` (`REX.W 63 /r`).
    pub fn movsx_rr(&mut self, from_bits: u8, w64: bool, dst: Reg, src: Reg) {
        match from_bits {
            8 => self.rr_op(None, w64, src.byte_needs_rex(), &[0x0f, 0xbe], dst, src),
            16 => self.rr_op(None, w64, false, &[0x0f, 0xbf], dst, src),
            _ => self.rr_op(None, true, false, &[0x63], dst, src),
        }
    }

    /// `bswap r32/r64` (`0F C8+r`).
    pub fn bswap(&mut self, w64: bool, r: Reg) {
        self.rex(w64, 0, 0, r.0, false);
        self.b(0x0f);
        self.b(0xc8 + r.low());
    }

    /// `ror r16, 8` (`66 C1 /1 08`): swaps the two low bytes.
    pub fn ror16_8(&mut self, r: Reg) {
        self.b(0x66);
        self.rex(false, 0, 0, r.0, false);
        self.b(0xc1);
        self.modrm_rr(1, r.0);
        self.b(8);
    }

    // ----------------------------------------------------------------------
    // Atomics (memory operand [base + disp])

    /// `lock op [m], src` for add/or/and/xor.
    pub fn lock_alu_mem(&mut self, op: Alu, w64: bool, base: Reg, disp: i32, src: Reg) {
        self.b(0xf0);
        self.mem_op(None, w64, false, &[op.rm_r()], src.0, base, disp);
    }

    /// `lock xadd [m], src` (`F0 0F C1 /r`).
    pub fn lock_xadd(&mut self, w64: bool, base: Reg, disp: i32, src: Reg) {
        self.b(0xf0);
        self.mem_op(None, w64, false, &[0x0f, 0xc1], src.0, base, disp);
    }

    /// `xchg [m], src` (`87 /r`), implicitly locked.
    pub fn xchg_mem(&mut self, w64: bool, base: Reg, disp: i32, src: Reg) {
        self.mem_op(None, w64, false, &[0x87], src.0, base, disp);
    }

    /// `lock cmpxchg [m], src` (`F0 0F B1 /r`): compares with rax.
    pub fn lock_cmpxchg(&mut self, w64: bool, base: Reg, disp: i32, src: Reg) {
        self.b(0xf0);
        self.mem_op(None, w64, false, &[0x0f, 0xb1], src.0, base, disp);
    }

    // ----------------------------------------------------------------------
    // Control flow

    /// `push r64` (`50+r`).
    pub fn push(&mut self, r: Reg) {
        self.rex(false, 0, 0, r.0, false);
        self.b(0x50 + r.low());
    }

    /// `pop r64` (`58+r`).
    pub fn pop(&mut self, r: Reg) {
        self.rex(false, 0, 0, r.0, false);
        self.b(0x58 + r.low());
    }

    /// `call r64` (`FF /2`).
    pub fn call_r(&mut self, r: Reg) {
        self.rex(false, 0, 0, r.0, false);
        self.b(0xff);
        self.modrm_rr(2, r.0);
    }

    /// `jmp r64` (`FF /4`).
    pub fn jmp_r(&mut self, r: Reg) {
        self.rex(false, 0, 0, r.0, false);
        self.b(0xff);
        self.modrm_rr(4, r.0);
    }

    /// `ret` (`C3`).
    pub fn ret(&mut self) {
        self.b(0xc3);
    }

    /// `jcc rel8` (`70+cc cb`); returns the offset of the displacement byte.
    pub fn jcc8(&mut self, cc: Cond, rel: i8) -> usize {
        self.b(0x70 | cc as u8);
        self.b(rel as u8);
        self.pos() - 1
    }

    /// `jcc rel32` (`0F 80+cc cd`); returns the offset of the displacement.
    pub fn jcc32(&mut self, cc: Cond, rel: i32) -> usize {
        self.b(0x0f);
        self.b(0x80 | cc as u8);
        self.d32(rel);
        self.pos() - 4
    }

    /// `jmp rel8` (`EB cb`); returns the offset of the displacement byte.
    pub fn jmp8(&mut self, rel: i8) -> usize {
        self.b(0xeb);
        self.b(rel as u8);
        self.pos() - 1
    }

    /// `jmp rel32` (`E9 cd`); returns the offset of the displacement.
    pub fn jmp32(&mut self, rel: i32) -> usize {
        self.b(0xe9);
        self.d32(rel);
        self.pos() - 4
    }

    /// `call rel32` (`E8 cd`); returns the offset of the displacement.
    pub fn call32(&mut self, rel: i32) -> usize {
        self.b(0xe8);
        self.d32(rel);
        self.pos() - 4
    }

    /// Patches a rel8 displacement at `at` so that it reaches `target`
    /// (the displacement counts from the end of the byte).
    pub fn patch8(&mut self, at: usize, target: usize) {
        let rel = target as i64 - (at as i64 + 1);
        let rel = i8::try_from(rel).expect("short jump out of range (JIT bug)");
        self.buf[at] = rel as u8;
    }

    /// Patches a rel32 displacement at `at` so that it reaches `target`.
    pub fn patch32(&mut self, at: usize, target: usize) {
        let rel = target as i64 - (at as i64 + 4);
        let rel = i32::try_from(rel).expect("code larger than 2 GiB (JIT bug)");
        self.buf[at..at + 4].copy_from_slice(&rel.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Asm)) -> Vec<u8> {
        let mut a = Asm::default();
        f(&mut a);
        a.buf
    }

    /// Each case's bytes were produced by GNU as 2.40 from the Intel-syntax
    /// line in the comment.
    #[test]
    fn encodings_match_gnu_as() {
        let cases: Vec<(Vec<u8>, &[u8])> = vec![
            // mov rax, rdi / mov eax, edi / mov r13, rbp / mov r15d, r8d
            (enc(|a| a.mov_rr(true, RAX, RDI)), &[0x48, 0x89, 0xf8]),
            (enc(|a| a.mov_rr(false, RAX, RDI)), &[0x89, 0xf8]),
            (enc(|a| a.mov_rr(true, R13, RBP)), &[0x49, 0x89, 0xed]),
            (enc(|a| a.mov_rr(false, R15, R8)), &[0x45, 0x89, 0xc7]),
            // mov r14d, 0x12345678 / mov r14, -2 / movabs r9, 0x1122334455667788
            (
                enc(|a| a.mov_r32_imm(R14, 0x1234_5678)),
                &[0x41, 0xbe, 0x78, 0x56, 0x34, 0x12],
            ),
            (
                enc(|a| a.mov_r64_simm(R14, -2)),
                &[0x49, 0xc7, 0xc6, 0xfe, 0xff, 0xff, 0xff],
            ),
            (
                enc(|a| a.mov_r64_imm64(R9, 0x1122_3344_5566_7788)),
                &[0x49, 0xb9, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
            ),
            // movzx eax, byte [rbp-1] / movzx esi, word [r13+0] / mov edx, [r12+8]
            (
                enc(|a| a.load(Width::B, RAX, RBP, -1)),
                &[0x0f, 0xb6, 0x45, 0xff],
            ),
            (
                enc(|a| a.load(Width::H, RSI, R13, 0)),
                &[0x41, 0x0f, 0xb7, 0x75, 0x00],
            ),
            (
                enc(|a| a.load(Width::W, RDX, R12, 8)),
                &[0x41, 0x8b, 0x54, 0x24, 0x08],
            ),
            // mov r15, [rdi+0x1000] / mov rbx, [rsp]
            (
                enc(|a| a.load(Width::Q, R15, RDI, 0x1000)),
                &[0x4c, 0x8b, 0xbf, 0x00, 0x10, 0x00, 0x00],
            ),
            (
                enc(|a| a.load(Width::Q, RBX, RSP, 0)),
                &[0x48, 0x8b, 0x1c, 0x24],
            ),
            // movsx rcx, byte [rsi] / movsx r8, word [rax+2] / movsxd rax, dword [rbx-4]
            (
                enc(|a| a.load_sx(Width::B, RCX, RSI, 0)),
                &[0x48, 0x0f, 0xbe, 0x0e],
            ),
            (
                enc(|a| a.load_sx(Width::H, R8, RAX, 2)),
                &[0x4c, 0x0f, 0xbf, 0x40, 0x02],
            ),
            (
                enc(|a| a.load_sx(Width::W, RAX, RBX, -4)),
                &[0x48, 0x63, 0x43, 0xfc],
            ),
            // mov [rdi], sil / mov [rbp-2], dil / mov [r13+3], bl / mov [rax], r11b
            (enc(|a| a.store(Width::B, RDI, 0, RSI)), &[0x40, 0x88, 0x37]),
            (
                enc(|a| a.store(Width::B, RBP, -2, RDI)),
                &[0x40, 0x88, 0x7d, 0xfe],
            ),
            (
                enc(|a| a.store(Width::B, R13, 3, RBX)),
                &[0x41, 0x88, 0x5d, 0x03],
            ),
            (enc(|a| a.store(Width::B, RAX, 0, R11)), &[0x44, 0x88, 0x18]),
            // mov [rsi+6], cx / mov [r8], eax / mov [rbp-8], r15
            (
                enc(|a| a.store(Width::H, RSI, 6, RCX)),
                &[0x66, 0x89, 0x4e, 0x06],
            ),
            (enc(|a| a.store(Width::W, R8, 0, RAX)), &[0x41, 0x89, 0x00]),
            (
                enc(|a| a.store(Width::Q, RBP, -8, R15)),
                &[0x4c, 0x89, 0x7d, 0xf8],
            ),
            // mov byte [rdi+1], 0x7f / mov word [rbp-2], 0x1234 /
            // mov dword [rdx], -1 / mov qword [r14-16], 5
            (
                enc(|a| a.store_imm(Width::B, RDI, 1, 0x7f)),
                &[0xc6, 0x47, 0x01, 0x7f],
            ),
            (
                enc(|a| a.store_imm(Width::H, RBP, -2, 0x1234)),
                &[0x66, 0xc7, 0x45, 0xfe, 0x34, 0x12],
            ),
            (
                enc(|a| a.store_imm(Width::W, RDX, 0, -1)),
                &[0xc7, 0x02, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                enc(|a| a.store_imm(Width::Q, R14, -16, 5)),
                &[0x49, 0xc7, 0x46, 0xf0, 0x05, 0x00, 0x00, 0x00],
            ),
            // lea r11, [rsp+0x120] / lea rbp, [rbp-0x200]
            (
                enc(|a| a.lea(R11, RSP, 0x120)),
                &[0x4c, 0x8d, 0x9c, 0x24, 0x20, 0x01, 0x00, 0x00],
            ),
            (
                enc(|a| a.lea(RBP, RBP, -0x200)),
                &[0x48, 0x8d, 0xad, 0x00, 0xfe, 0xff, 0xff],
            ),
            // mov r10, [r10+r11*8]
            (
                enc(|a| a.load_indexed8(R10, R10, R11)),
                &[0x4f, 0x8b, 0x14, 0xda],
            ),
            // add rax, rdi / sub r13d, ecx / xor r15, r15 / cmp rsi, r8
            (
                enc(|a| a.alu_rr(Alu::Add, true, RAX, RDI)),
                &[0x48, 0x01, 0xf8],
            ),
            (
                enc(|a| a.alu_rr(Alu::Sub, false, R13, RCX)),
                &[0x41, 0x29, 0xcd],
            ),
            (
                enc(|a| a.alu_rr(Alu::Xor, true, R15, R15)),
                &[0x4d, 0x31, 0xff],
            ),
            (
                enc(|a| a.alu_rr(Alu::Cmp, true, RSI, R8)),
                &[0x4c, 0x39, 0xc6],
            ),
            // add rdi, 14 / and ebx, 0x12345 / cmp r14, -1 / or rcx, 0x80
            (
                enc(|a| a.alu_ri(Alu::Add, true, RDI, 14)),
                &[0x48, 0x83, 0xc7, 0x0e],
            ),
            (
                enc(|a| a.alu_ri(Alu::And, false, RBX, 0x12345)),
                &[0x81, 0xe3, 0x45, 0x23, 0x01, 0x00],
            ),
            (
                enc(|a| a.alu_ri(Alu::Cmp, true, R14, -1)),
                &[0x49, 0x83, 0xfe, 0xff],
            ),
            (
                enc(|a| a.alu_ri(Alu::Or, true, RCX, 0x80)),
                &[0x48, 0x81, 0xc9, 0x80, 0x00, 0x00, 0x00],
            ),
            // cmp rbp, [r12+0x18] / cmp qword [r12-8], 0
            (
                enc(|a| a.cmp_r_mem(RBP, R12, 0x18)),
                &[0x49, 0x3b, 0x6c, 0x24, 0x18],
            ),
            (
                enc(|a| a.cmp_mem_imm8(R12, -8, 0)),
                &[0x49, 0x83, 0x7c, 0x24, 0xf8, 0x00],
            ),
            // test rcx, rdx / test r9d, 0x100
            (enc(|a| a.test_rr(true, RCX, RDX)), &[0x48, 0x85, 0xd1]),
            (
                enc(|a| a.test_ri(false, R9, 0x100)),
                &[0x41, 0xf7, 0xc1, 0x00, 0x01, 0x00, 0x00],
            ),
            // imul rbx, r13 / imul eax, eax, 3 / imul r8, r8, 0x10000
            (
                enc(|a| a.imul_rr(true, RBX, R13)),
                &[0x49, 0x0f, 0xaf, 0xdd],
            ),
            (enc(|a| a.imul_rri(false, RAX, RAX, 3)), &[0x6b, 0xc0, 0x03]),
            (
                enc(|a| a.imul_rri(true, R8, R8, 0x10000)),
                &[0x4d, 0x69, 0xc0, 0x00, 0x00, 0x01, 0x00],
            ),
            // neg r15 / div r11 / idiv r11d / cqo / cdq
            (enc(|a| a.neg(true, R15)), &[0x49, 0xf7, 0xdf]),
            (enc(|a| a.div(true, false, R11)), &[0x49, 0xf7, 0xf3]),
            (enc(|a| a.div(false, true, R11)), &[0x41, 0xf7, 0xfb]),
            (enc(|a| a.cqo(true)), &[0x48, 0x99]),
            (enc(|a| a.cqo(false)), &[0x99]),
            // shl rdi, 3 / sar r13d, 31 / shr rcx, cl
            (
                enc(|a| a.shift_ri(Shift::Shl, true, RDI, 3)),
                &[0x48, 0xc1, 0xe7, 0x03],
            ),
            (
                enc(|a| a.shift_ri(Shift::Sar, false, R13, 31)),
                &[0x41, 0xc1, 0xfd, 0x1f],
            ),
            (
                enc(|a| a.shift_cl(Shift::Shr, true, RCX)),
                &[0x48, 0xd3, 0xe9],
            ),
            // shlx rax, rax, rsi / shrx r13d, r13d, ecx / sarx r8, rbx, r15
            (
                enc(|a| a.shiftx(Shift::Shl, true, RAX, RAX, RSI)),
                &[0xc4, 0xe2, 0xc9, 0xf7, 0xc0],
            ),
            (
                enc(|a| a.shiftx(Shift::Shr, false, R13, R13, RCX)),
                &[0xc4, 0x42, 0x73, 0xf7, 0xed],
            ),
            (
                enc(|a| a.shiftx(Shift::Sar, true, R8, RBX, R15)),
                &[0xc4, 0x62, 0x82, 0xf7, 0xc3],
            ),
            // movzx r14d, r14w / movsx rdi, dil / movsx ebx, bx / movsxd r8, r8d
            (enc(|a| a.movzx16_rr(R14, R14)), &[0x45, 0x0f, 0xb7, 0xf6]),
            (
                enc(|a| a.movsx_rr(8, true, RDI, RDI)),
                &[0x48, 0x0f, 0xbe, 0xff],
            ),
            (
                enc(|a| a.movsx_rr(16, false, RBX, RBX)),
                &[0x0f, 0xbf, 0xdb],
            ),
            (enc(|a| a.movsx_rr(32, true, R8, R8)), &[0x4d, 0x63, 0xc0]),
            // bswap r14 / bswap eax / ror si, 8 / ror r13w, 8
            (enc(|a| a.bswap(true, R14)), &[0x49, 0x0f, 0xce]),
            (enc(|a| a.bswap(false, RAX)), &[0x0f, 0xc8]),
            (enc(|a| a.ror16_8(RSI)), &[0x66, 0xc1, 0xce, 0x08]),
            (enc(|a| a.ror16_8(R13)), &[0x66, 0x41, 0xc1, 0xcd, 0x08]),
            // lock add [rdi+8], rsi / lock xor dword [rbp-4], eax
            (
                enc(|a| a.lock_alu_mem(Alu::Add, true, RDI, 8, RSI)),
                &[0xf0, 0x48, 0x01, 0x77, 0x08],
            ),
            (
                enc(|a| a.lock_alu_mem(Alu::Xor, false, RBP, -4, RAX)),
                &[0xf0, 0x31, 0x45, 0xfc],
            ),
            // lock xadd [r13+0], r15 / xchg [rdi], ecx / lock cmpxchg [rsi+16], rdx
            (
                enc(|a| a.lock_xadd(true, R13, 0, R15)),
                &[0xf0, 0x4d, 0x0f, 0xc1, 0x7d, 0x00],
            ),
            (enc(|a| a.xchg_mem(false, RDI, 0, RCX)), &[0x87, 0x0f]),
            (
                enc(|a| a.lock_cmpxchg(true, RSI, 16, RDX)),
                &[0xf0, 0x48, 0x0f, 0xb1, 0x56, 0x10],
            ),
            // push r15 / pop rbx / call r11 / jmp r11 / ret
            (enc(|a| a.push(R15)), &[0x41, 0x57]),
            (enc(|a| a.pop(RBX)), &[0x5b]),
            (enc(|a| a.call_r(R11)), &[0x41, 0xff, 0xd3]),
            (enc(|a| a.jmp_r(R11)), &[0x41, 0xff, 0xe3]),
            (enc(|a| a.ret()), &[0xc3]),
            // jne +5 / ja (rel32) +0x100 / jmp -2
            (
                enc(|a| {
                    a.jcc8(Cond::Ne, 5);
                }),
                &[0x75, 0x05],
            ),
            (
                enc(|a| {
                    a.jcc32(Cond::A, 0x100);
                }),
                &[0x0f, 0x87, 0x00, 0x01, 0x00, 0x00],
            ),
            (
                enc(|a| {
                    a.jmp8(-2);
                }),
                &[0xeb, 0xfe],
            ),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            assert_eq!(
                &got[..],
                *want,
                "case {i}: got {got:02x?}, want {want:02x?}"
            );
        }
    }

    #[test]
    fn load_imm64_picks_the_shortest_form() {
        assert_eq!(enc(|a| a.load_imm64(RAX, 0)), [0x31, 0xc0]);
        assert_eq!(enc(|a| a.load_imm64(RAX, 7)).len(), 5);
        assert_eq!(enc(|a| a.load_imm64(RAX, u64::MAX)).len(), 7);
        assert_eq!(enc(|a| a.load_imm64(RAX, 1 << 40)).len(), 10);
    }
}
