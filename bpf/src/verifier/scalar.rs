//! The scalar domain: a tnum plus signed and unsigned bounds in 64 and 32
//! bits, kept consistent with one another (Linux's `reg_bounds_sync`).
//!
//! A [`Scalar`] stands for the set of 64-bit values that are members of its
//! tnum *and* lie within all four intervals. Each interval says something
//! the others cannot (`[-1, 1]` signed is two ranges unsigned; a 32-bit
//! range survives 64-bit arithmetic that loses the 64-bit one), so all are
//! kept and [`Scalar::sync`] derives from each what it implies for the
//! others. Every derivation only removes values that cannot be members,
//! so `sync` is sound however few rounds it makes.
//!
//! The same type holds the *variable part* of a pointer's offset (see
//! [`super::state::Reg`]).
//!
//! Transfer functions ([`alu`], [`branch`]) over-approximate the concrete
//! semantics of RFC 9669, which is also the interpreter's: shifts mask
//! their count, division by zero gives 0 and modulo by zero leaves the
//! dividend. When both operands are constants the result is computed
//! exactly by [`eval_alu`], the same function the interpreter's semantics
//! are tested against.

use std::fmt;

use super::tnum::Tnum;
use crate::isa::{AluOp, JmpOp, Width};

/// A set of 64-bit values (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scalar {
    /// Known bits.
    pub var: Tnum,
    /// Unsigned 64-bit bounds.
    pub umin: u64,
    /// Unsigned 64-bit upper bound.
    pub umax: u64,
    /// Signed 64-bit lower bound.
    pub smin: i64,
    /// Signed 64-bit upper bound.
    pub smax: i64,
    /// Unsigned bounds of the low 32 bits.
    pub u32min: u32,
    /// Unsigned upper bound of the low 32 bits.
    pub u32max: u32,
    /// Signed bounds of the low 32 bits.
    pub s32min: i32,
    /// Signed upper bound of the low 32 bits.
    pub s32max: i32,
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Scalar {
    /// Linux's log style: `42`, or the non-trivial bounds, e.g.
    /// `umax=255,var_off=(0x0; 0xff)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.const_value() {
            return if (v as i64) < 0 && (v as i64) > -4096 {
                write!(f, "{}", v as i64)
            } else if v < 4096 {
                write!(f, "{v}")
            } else {
                write!(f, "{v:#x}")
            };
        }
        let mut parts: Vec<String> = Vec::new();
        // The signed bounds only when they say more than the unsigned ones.
        let signed_same = self.umax <= i64::MAX as u64
            && self.smin == self.umin as i64
            && self.smax == self.umax as i64;
        if !signed_same {
            if self.smin != i64::MIN {
                parts.push(format!("smin={}", self.smin));
            }
            if self.smax != i64::MAX {
                parts.push(format!("smax={}", self.smax));
            }
        }
        if self.umin != 0 {
            parts.push(format!("umin={}", self.umin));
        }
        if self.umax != u64::MAX {
            parts.push(format!("umax={}", self.umax));
        }
        if self.umax > u64::from(u32::MAX) {
            if self.s32min != i32::MIN {
                parts.push(format!("smin32={}", self.s32min));
            }
            if self.s32max != i32::MAX {
                parts.push(format!("smax32={}", self.s32max));
            }
            if self.u32min != 0 {
                parts.push(format!("umin32={}", self.u32min));
            }
            if self.u32max != u32::MAX {
                parts.push(format!("umax32={}", self.u32max));
            }
        }
        // The known bits only when the bounds do not already imply them.
        if !self.var.is_unknown() && self.var != Tnum::range(self.umin, self.umax) {
            parts.push(format!(
                "var_off=({:#x}; {:#x})",
                self.var.value, self.var.mask
            ));
        }
        if parts.is_empty() {
            f.write_str("unknown")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl Scalar {
    /// Any 64-bit value.
    pub const UNKNOWN: Scalar = Scalar {
        var: Tnum::UNKNOWN,
        umin: 0,
        umax: u64::MAX,
        smin: i64::MIN,
        smax: i64::MAX,
        u32min: 0,
        u32max: u32::MAX,
        s32min: i32::MIN,
        s32max: i32::MAX,
    };

    /// Exactly `v`.
    pub const fn konst(v: u64) -> Scalar {
        Scalar {
            var: Tnum::konst(v),
            umin: v,
            umax: v,
            smin: v as i64,
            smax: v as i64,
            u32min: v as u32,
            u32max: v as u32,
            s32min: v as i32,
            s32max: v as i32,
        }
    }

    /// Every value of `lo..=hi` (unsigned).
    pub fn urange(lo: u64, hi: u64) -> Scalar {
        let mut s = Scalar::UNKNOWN;
        s.umin = lo;
        s.umax = hi;
        s.sync();
        s
    }

    /// Every value of `lo..=hi` (signed).
    pub fn srange(lo: i64, hi: i64) -> Scalar {
        let mut s = Scalar::UNKNOWN;
        s.smin = lo;
        s.smax = hi;
        s.sync();
        s
    }

    /// Any value of `bytes` bytes, zero-extended (a load's result).
    pub fn sized(bytes: u32) -> Scalar {
        if bytes >= 8 {
            Scalar::UNKNOWN
        } else {
            Scalar::urange(0, (1u64 << (bytes * 8)) - 1)
        }
    }

    /// The value, when there is only one.
    pub const fn const_value(&self) -> Option<u64> {
        if self.var.is_const() {
            Some(self.var.value)
        } else {
            None
        }
    }

    /// Whether the set holds exactly `v`.
    pub const fn is_const(&self, v: u64) -> bool {
        self.var.is_const() && self.var.value == v
    }

    /// Whether the set holds nothing: the bounds contradict one another.
    pub fn is_empty(&self) -> bool {
        self.umin > self.umax
            || self.smin > self.smax
            || self.u32min > self.u32max
            || self.s32min > self.s32max
            || self.var.umin() > self.umax
            || self.var.umax() < self.umin
    }

    /// Whether `v` is a member.
    pub fn contains(&self, v: u64) -> bool {
        self.var.contains(v)
            && (self.umin..=self.umax).contains(&v)
            && (self.smin..=self.smax).contains(&(v as i64))
            && (self.u32min..=self.u32max).contains(&(v as u32))
            && (self.s32min..=self.s32max).contains(&(v as i32))
    }

    /// Whether every member of `other` is a member of `self` (the pruning
    /// test for scalars).
    pub fn includes(&self, other: &Scalar) -> bool {
        self.var.includes(other.var)
            && self.umin <= other.umin
            && other.umax <= self.umax
            && self.smin <= other.smin
            && other.smax <= self.smax
            && self.u32min <= other.u32min
            && other.u32max <= self.u32max
            && self.s32min <= other.s32min
            && other.s32max <= self.s32max
    }

    /// The signed interval of the members, as exactly as the bounds say:
    /// `[smin, smax]` narrowed by the unsigned bounds when they do not
    /// straddle the sign boundary. Used for address arithmetic, where a
    /// pointer's variable offset is a signed quantity.
    pub fn signed_interval(&self) -> (i64, i64) {
        let (mut lo, mut hi) = (self.smin, self.smax);
        if self.umax <= i64::MAX as u64 || self.umin > i64::MAX as u64 {
            lo = lo.max(self.umin as i64);
            hi = hi.min(self.umax as i64);
        }
        (lo, hi)
    }

    /// Re-derives every bound from the others (Linux's `reg_bounds_sync`).
    /// Returns `false` when they contradict each other (the set is empty).
    pub fn sync(&mut self) -> bool {
        for _ in 0..2 {
            self.update_from_tnum();
            self.deduce32();
            self.deduce64();
            self.deduce_mixed();
            self.deduce64();
            // Learn bits from the bounds.
            let Some(v) = self.var.intersect(Tnum::range(self.umin, self.umax)) else {
                return false;
            };
            let Some(low) = v
                .subreg()
                .intersect(Tnum::range(self.u32min.into(), self.u32max.into()))
            else {
                return false;
            };
            self.var = v.with_subreg(low);
        }
        self.update_from_tnum();
        !self.is_empty()
    }

    fn update_from_tnum(&mut self) {
        let t = self.var;
        self.smin = self.smin.max(t.smin());
        self.smax = self.smax.min(t.smax());
        self.umin = self.umin.max(t.umin());
        self.umax = self.umax.min(t.umax());
        let t32 = t.subreg();
        let s32min = (t32.value | (t32.mask & 0x8000_0000)) as u32 as i32;
        let s32max = (t32.value | (t32.mask & 0x7fff_ffff)) as u32 as i32;
        self.s32min = self.s32min.max(s32min);
        self.s32max = self.s32max.min(s32max);
        self.u32min = self.u32min.max(t32.umin() as u32);
        self.u32max = self.u32max.min(t32.umax() as u32);
    }

    fn deduce32(&mut self) {
        // When the upper halves of a 64-bit range agree, its lower halves
        // form a 32-bit range.
        if self.umin >> 32 == self.umax >> 32 {
            self.u32min = self.u32min.max(self.umin as u32);
            self.u32max = self.u32max.min(self.umax as u32);
            if (self.umin as i32) <= (self.umax as i32) {
                self.s32min = self.s32min.max(self.umin as i32);
                self.s32max = self.s32max.min(self.umax as i32);
            }
        }
        if self.smin >> 32 == self.smax >> 32 {
            if (self.smin as u32) <= (self.smax as u32) {
                self.u32min = self.u32min.max(self.smin as u32);
                self.u32max = self.u32max.min(self.smax as u32);
            }
            if (self.smin as i32) <= (self.smax as i32) {
                self.s32min = self.s32min.max(self.smin as i32);
                self.s32max = self.s32max.min(self.smax as i32);
            }
        }
        // A u32 range that does not cross the sign bit is an s32 range too,
        // and the other way round.
        if (self.u32min as i32) <= (self.u32max as i32) {
            self.s32min = self.s32min.max(self.u32min as i32);
            self.s32max = self.s32max.min(self.u32max as i32);
        }
        if (self.s32min as u32) <= (self.s32max as u32) {
            self.u32min = self.u32min.max(self.s32min as u32);
            self.u32max = self.u32max.min(self.s32max as u32);
        }
    }

    fn deduce64(&mut self) {
        if (self.umin as i64) <= (self.umax as i64) {
            self.smin = self.smin.max(self.umin as i64);
            self.smax = self.smax.min(self.umax as i64);
        }
        if (self.smin as u64) <= (self.smax as u64) {
            self.umin = self.umin.max(self.smin as u64);
            self.umax = self.umax.min(self.smax as u64);
        }
    }

    fn deduce_mixed(&mut self) {
        // The 32-bit bounds constrain the low half of the 64-bit bounds.
        const HI: u64 = !0xffff_ffff;
        let new_umin = (self.umin & HI) | u64::from(self.u32min);
        let new_umax = (self.umax & HI) | u64::from(self.u32max);
        self.umin = self.umin.max(new_umin);
        self.umax = self.umax.min(new_umax);
        let new_smin = ((self.smin as u64 & HI) | u64::from(self.u32min)) as i64;
        let new_smax = ((self.smax as u64 & HI) | u64::from(self.u32max)) as i64;
        self.smin = self.smin.max(new_smin);
        self.smax = self.smax.min(new_smax);
    }

    /// The low 32 bits, zero-extended (what a 32-bit operation reads, and
    /// how its result lands in the 64-bit register).
    pub fn zext32(&self) -> Scalar {
        let mut s = Scalar {
            var: self.var.subreg(),
            umin: u64::from(self.u32min),
            umax: u64::from(self.u32max),
            smin: i64::from(self.u32min),
            smax: i64::from(self.u32max),
            u32min: self.u32min,
            u32max: self.u32max,
            s32min: self.s32min,
            s32max: self.s32max,
        };
        s.sync();
        s
    }

    /// The low `bytes` bytes (1, 2, 4 or 8), zero-extended.
    pub fn cast(&self, bytes: u32) -> Scalar {
        match bytes {
            8.. => *self,
            4 => self.zext32(),
            _ => {
                let bits = bytes * 8;
                let m = (1u64 << bits) - 1;
                let (lo, hi) = if self.umin >> bits == self.umax >> bits {
                    (self.umin & m, self.umax & m)
                } else {
                    (0, m)
                };
                let mut s = Scalar::urange(lo, hi);
                s.var = s.var.intersect(self.var.cast(bytes)).unwrap_or(s.var);
                s.sync();
                s
            }
        }
    }

    /// The low `bits` bits (8, 16 or 32) read as signed, sign-extended to 64.
    pub fn sext(&self, bits: u32) -> Scalar {
        let low = self.cast(bits / 8);
        let half = 1u64 << (bits - 1);
        let (lo, hi) = if low.umax < half {
            (low.umin as i64, low.umax as i64)
        } else if low.umin >= half {
            (
                low.umin as i64 - (1i64 << bits),
                low.umax as i64 - (1i64 << bits),
            )
        } else {
            (-(half as i64), half as i64 - 1)
        };
        let mut s = Scalar::srange(lo, hi);
        let sh = 64 - bits;
        let t = low.var.lshift(sh).arshift(sh);
        s.var = s.var.intersect(t).unwrap_or(s.var);
        s.sync();
        s
    }

    /// Keeps of `self`'s 32-bit knowledge what `low` also knows: `low` is
    /// another sound description of the low 32 bits.
    fn meet32(&mut self, low: &Scalar) {
        self.u32min = self.u32min.max(low.u32min);
        self.u32max = self.u32max.min(low.u32max);
        self.s32min = self.s32min.max(low.s32min);
        self.s32max = self.s32max.min(low.s32max);
        if let Some(t) = self.var.subreg().intersect(low.var.subreg()) {
            self.var = self.var.with_subreg(t);
        }
    }
}

/// Evaluates an ALU operation on constants, exactly as RFC 9669 (and the
/// interpreter) defines it. `Movsx(bits)` sign-extends `b`.
pub fn eval_alu(op: AluOp, width: Width, a: u64, b: u64) -> u64 {
    match width {
        Width::W64 => match op {
            AluOp::Add => a.wrapping_add(b),
            AluOp::Sub => a.wrapping_sub(b),
            AluOp::Mul => a.wrapping_mul(b),
            AluOp::Div => a.checked_div(b).unwrap_or(0),
            AluOp::Sdiv => {
                if b == 0 {
                    0
                } else {
                    (a as i64).wrapping_div(b as i64) as u64
                }
            }
            AluOp::Or => a | b,
            AluOp::And => a & b,
            AluOp::Lsh => a << (b & 63),
            AluOp::Rsh => a >> (b & 63),
            AluOp::Mod => a.checked_rem(b).unwrap_or(a),
            AluOp::Smod => {
                if b == 0 {
                    a
                } else {
                    (a as i64).wrapping_rem(b as i64) as u64
                }
            }
            AluOp::Xor => a ^ b,
            AluOp::Mov => b,
            AluOp::Movsx(8) => b as i8 as i64 as u64,
            AluOp::Movsx(16) => b as i16 as i64 as u64,
            AluOp::Movsx(_) => b as i32 as i64 as u64,
            AluOp::Arsh => ((a as i64) >> (b & 63)) as u64,
        },
        Width::W32 => {
            let (x, y) = (a as u32, b as u32);
            u64::from(match op {
                AluOp::Add => x.wrapping_add(y),
                AluOp::Sub => x.wrapping_sub(y),
                AluOp::Mul => x.wrapping_mul(y),
                AluOp::Div => x.checked_div(y).unwrap_or(0),
                AluOp::Sdiv => {
                    if y == 0 {
                        0
                    } else {
                        (x as i32).wrapping_div(y as i32) as u32
                    }
                }
                AluOp::Or => x | y,
                AluOp::And => x & y,
                AluOp::Lsh => x << (y & 31),
                AluOp::Rsh => x >> (y & 31),
                AluOp::Mod => x.checked_rem(y).unwrap_or(x),
                AluOp::Smod => {
                    if y == 0 {
                        x
                    } else {
                        (x as i32).wrapping_rem(y as i32) as u32
                    }
                }
                AluOp::Xor => x ^ y,
                AluOp::Mov => y,
                AluOp::Movsx(8) => y as i8 as i32 as u32,
                AluOp::Movsx(_) => y as i16 as i32 as u32,
                AluOp::Arsh => ((x as i32) >> (y & 31)) as u32,
            })
        }
    }
}

/// `lo..=hi` of exact results as a 64-bit unsigned range, if the exact
/// interval does not straddle a multiple of 2^64 (then the wrapped results
/// still form one interval).
fn wrap_u(lo: i128, hi: i128) -> Option<(u64, u64)> {
    if hi - lo >= 1i128 << 64 {
        return None;
    }
    (lo >> 64 == hi >> 64).then_some((lo as u64, hi as u64))
}

/// As [`wrap_u`] for the signed reading.
fn wrap_s(lo: i128, hi: i128) -> Option<(i64, i64)> {
    let bias = 1i128 << 63;
    let (l, h) = wrap_u(lo + bias, hi + bias)?;
    Some(((l ^ (1 << 63)) as i64, (h ^ (1 << 63)) as i64))
}

fn set_u(r: &mut Scalar, b: Option<(u64, u64)>) {
    if let Some((lo, hi)) = b {
        r.umin = lo;
        r.umax = hi;
    }
}

fn set_s(r: &mut Scalar, b: Option<(i64, i64)>) {
    if let Some((lo, hi)) = b {
        r.smin = lo;
        r.smax = hi;
    }
}

/// The 64-bit transfer function of a non-constant operation; `shift_mask`
/// is 63, or 31 when a 32-bit operation runs on its 32-bit views. The
/// result is not yet synced.
fn op64(op: AluOp, a: &Scalar, b: &Scalar, shift_mask: u64) -> Scalar {
    let mut r = Scalar::UNKNOWN;
    let (au, bu) = (
        (a.umin as i128, a.umax as i128),
        (b.umin as i128, b.umax as i128),
    );
    let (as_, bs) = (
        (a.smin as i128, a.smax as i128),
        (b.smin as i128, b.smax as i128),
    );
    match op {
        AluOp::Add => {
            r.var = a.var.add(b.var);
            set_u(&mut r, wrap_u(au.0 + bu.0, au.1 + bu.1));
            set_s(&mut r, wrap_s(as_.0 + bs.0, as_.1 + bs.1));
        }
        AluOp::Sub => {
            r.var = a.var.sub(b.var);
            set_u(&mut r, wrap_u(au.0 - bu.1, au.1 - bu.0));
            set_s(&mut r, wrap_s(as_.0 - bs.1, as_.1 - bs.0));
        }
        AluOp::Mul => {
            r.var = a.var.mul(b.var);
            let (lo, hi) = (
                (a.umin as u128) * (b.umin as u128),
                (a.umax as u128) * (b.umax as u128),
            );
            if lo >> 64 == hi >> 64 {
                r.umin = lo as u64;
                r.umax = hi as u64;
            }
            let p = [as_.0 * bs.0, as_.0 * bs.1, as_.1 * bs.0, as_.1 * bs.1];
            let (lo, hi) = (
                p.iter().copied().min().unwrap_or(0),
                p.iter().copied().max().unwrap_or(0),
            );
            set_s(&mut r, wrap_s(lo, hi));
        }
        AluOp::And => {
            r.var = a.var.and(b.var);
            r.umax = a.umax.min(b.umax);
        }
        AluOp::Or => {
            r.var = a.var.or(b.var);
            r.umin = a.umin.max(b.umin);
        }
        AluOp::Xor => {
            r.var = a.var.xor(b.var);
        }
        AluOp::Lsh => {
            if let Some(c) = b.const_value() {
                let s = (c & shift_mask) as u32;
                r.var = a.var.lshift(s);
                if a.umax <= u64::MAX >> s {
                    r.umin = a.umin << s;
                    r.umax = a.umax << s;
                }
            }
        }
        AluOp::Rsh => match b.const_value() {
            Some(c) => {
                let s = (c & shift_mask) as u32;
                r.var = a.var.rshift(s);
                r.umin = a.umin >> s;
                r.umax = a.umax >> s;
            }
            // Shifting right never makes a value larger.
            None => r.umax = a.umax,
        },
        AluOp::Arsh => match b.const_value() {
            Some(c) => {
                let s = (c & shift_mask) as u32;
                r.var = a.var.arshift(s);
                r.smin = a.smin >> s;
                r.smax = a.smax >> s;
            }
            // An arithmetic shift moves towards 0 (or -1).
            None => {
                r.smin = a.smin.min(0);
                r.smax = a.smax.max(0);
            }
        },
        AluOp::Div => match b.const_value() {
            Some(0) => r = Scalar::konst(0),
            Some(c) => {
                r.umin = a.umin / c;
                r.umax = a.umax / c;
            }
            None => r.umax = a.umax,
        },
        AluOp::Mod => match b.const_value() {
            Some(0) => r = *a,
            Some(c) if a.umax < c => r = *a,
            Some(c) => r.umax = c - 1,
            None if b.umin > 0 => r.umax = a.umax.min(b.umax - 1),
            None => r.umax = a.umax,
        },
        AluOp::Sdiv | AluOp::Smod => {}
        AluOp::Mov => r = *b,
        AluOp::Movsx(bits) => r = b.sext(bits.into()),
    }
    r
}

/// Whether the low 32 bits of a 64-bit result depend only on the low 32
/// bits of the operands.
fn low_half_only(op: AluOp) -> bool {
    matches!(
        op,
        AluOp::Add | AluOp::Sub | AluOp::Mul | AluOp::And | AluOp::Or | AluOp::Xor | AluOp::Lsh
    )
}

/// `a OP b` at `width` (for 32 bits: on the low halves, zero-extended).
pub fn alu(op: AluOp, width: Width, a: &Scalar, b: &Scalar) -> Scalar {
    if let (Some(x), Some(y)) = (a.const_value(), b.const_value()) {
        return Scalar::konst(eval_alu(op, width, x, y));
    }
    match width {
        Width::W64 => {
            if op == AluOp::Mov {
                return *b;
            }
            let mut r = op64(op, a, b, 63);
            r.sync();
            if low_half_only(op) {
                let mut low = op64(op, &a.zext32(), &b.zext32(), 63);
                low.sync();
                r.meet32(&low.zext32());
                r.sync();
            }
            if r.is_empty() {
                // Cannot happen for non-empty inputs; stay sound regardless.
                return Scalar::UNKNOWN;
            }
            r
        }
        Width::W32 => {
            let (x, y) = match op {
                AluOp::Arsh | AluOp::Sdiv | AluOp::Smod => (a.sext(32), b.sext(32)),
                _ => (a.zext32(), b.zext32()),
            };
            let mut r = op64(op, &x, &y, 31);
            if !r.sync() {
                return Scalar::sized(4);
            }
            r.zext32()
        }
    }
}

/// `-a` at `width`.
pub fn neg(width: Width, a: &Scalar) -> Scalar {
    alu(AluOp::Sub, width, &Scalar::konst(0), a)
}

/// A comparison, with the negation of `jset` that Linux lacks a name for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cond {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `>`
    Sgt,
    /// signed `>=`
    Sge,
    /// signed `<`
    Slt,
    /// signed `<=`
    Sle,
    /// `a & b != 0`
    Set,
    /// `a & b == 0`
    NotSet,
}

impl Cond {
    /// The condition a jump instruction tests.
    pub fn of(op: JmpOp) -> Cond {
        match op {
            JmpOp::Eq => Cond::Eq,
            JmpOp::Ne => Cond::Ne,
            JmpOp::Gt => Cond::Gt,
            JmpOp::Ge => Cond::Ge,
            JmpOp::Lt => Cond::Lt,
            JmpOp::Le => Cond::Le,
            JmpOp::Sgt => Cond::Sgt,
            JmpOp::Sge => Cond::Sge,
            JmpOp::Slt => Cond::Slt,
            JmpOp::Sle => Cond::Sle,
            JmpOp::Set => Cond::Set,
        }
    }

    /// The condition that holds when `self` does not.
    pub fn negate(self) -> Cond {
        match self {
            Cond::Eq => Cond::Ne,
            Cond::Ne => Cond::Eq,
            Cond::Gt => Cond::Le,
            Cond::Ge => Cond::Lt,
            Cond::Lt => Cond::Ge,
            Cond::Le => Cond::Gt,
            Cond::Sgt => Cond::Sle,
            Cond::Sge => Cond::Slt,
            Cond::Slt => Cond::Sge,
            Cond::Sle => Cond::Sgt,
            Cond::Set => Cond::NotSet,
            Cond::NotSet => Cond::Set,
        }
    }

    /// The condition with its operands swapped (`a < b` is `b > a`).
    pub fn swap(self) -> Cond {
        match self {
            Cond::Gt => Cond::Lt,
            Cond::Ge => Cond::Le,
            Cond::Lt => Cond::Gt,
            Cond::Le => Cond::Ge,
            Cond::Sgt => Cond::Slt,
            Cond::Sge => Cond::Sle,
            Cond::Slt => Cond::Sgt,
            Cond::Sle => Cond::Sge,
            c => c,
        }
    }

    /// Evaluates the condition on concrete values.
    pub fn eval(self, width: Width, a: u64, b: u64) -> bool {
        let (a, b) = match width {
            Width::W64 => (a, b),
            Width::W32 => (u64::from(a as u32), u64::from(b as u32)),
        };
        let (sa, sb) = match width {
            Width::W64 => (a as i64, b as i64),
            Width::W32 => (i64::from(a as u32 as i32), i64::from(b as u32 as i32)),
        };
        match self {
            Cond::Eq => a == b,
            Cond::Ne => a != b,
            Cond::Gt => a > b,
            Cond::Ge => a >= b,
            Cond::Lt => a < b,
            Cond::Le => a <= b,
            Cond::Sgt => sa > sb,
            Cond::Sge => sa >= sb,
            Cond::Slt => sa < sb,
            Cond::Sle => sa <= sb,
            Cond::Set => a & b != 0,
            Cond::NotSet => a & b == 0,
        }
    }
}

/// The part of a scalar that a comparison of one width looks at.
#[derive(Clone, Copy)]
struct View {
    var: Tnum,
    umin: u64,
    umax: u64,
    smin: i64,
    smax: i64,
}

impl View {
    fn of(s: &Scalar, width: Width) -> View {
        match width {
            Width::W64 => View {
                var: s.var,
                umin: s.umin,
                umax: s.umax,
                smin: s.smin,
                smax: s.smax,
            },
            Width::W32 => View {
                var: s.var.subreg(),
                umin: s.u32min.into(),
                umax: s.u32max.into(),
                smin: s.s32min.into(),
                smax: s.s32max.into(),
            },
        }
    }

    fn store(&self, s: &mut Scalar, width: Width) {
        match width {
            Width::W64 => {
                s.var = self.var;
                s.umin = self.umin;
                s.umax = self.umax;
                s.smin = self.smin;
                s.smax = self.smax;
            }
            Width::W32 => {
                s.var = s.var.with_subreg(self.var);
                s.u32min = self.umin as u32;
                s.u32max = self.umax as u32;
                s.s32min = self.smin as i32;
                s.s32max = self.smax as i32;
            }
        }
    }

    fn konst(&self) -> Option<u64> {
        self.var.is_const().then_some(self.var.value)
    }
}

/// Narrows `a` and `b` to the members for which `a COND b` holds. Returns
/// `false` when no pair of members satisfies it.
fn refine_views(a: &mut View, b: &mut View, cond: Cond, width: Width) -> bool {
    let (umax_all, smin_all, smax_all) = match width {
        Width::W64 => (u64::MAX, i64::MIN, i64::MAX),
        Width::W32 => (
            u64::from(u32::MAX),
            i64::from(i32::MIN),
            i64::from(i32::MAX),
        ),
    };
    match cond {
        Cond::Eq => {
            let Some(t) = a.var.intersect(b.var) else {
                return false;
            };
            let m = View {
                var: t,
                umin: a.umin.max(b.umin),
                umax: a.umax.min(b.umax),
                smin: a.smin.max(b.smin),
                smax: a.smax.min(b.smax),
            };
            *a = m;
            *b = m;
        }
        Cond::Ne => {
            let (ka, kb) = (a.konst(), b.konst());
            if let (Some(x), Some(y)) = (ka, kb) {
                return x != y;
            }
            for (r, k) in [(&mut *a, kb), (&mut *b, ka)] {
                let Some(c) = k else { continue };
                if r.umin == c {
                    if c == umax_all {
                        return false;
                    }
                    r.umin += 1;
                }
                if r.umax == c {
                    if c == 0 {
                        return false;
                    }
                    r.umax -= 1;
                }
                let sc = sign(c, width);
                if r.smin == sc {
                    if sc == smax_all {
                        return false;
                    }
                    r.smin += 1;
                }
                if r.smax == sc {
                    if sc == smin_all {
                        return false;
                    }
                    r.smax -= 1;
                }
            }
        }
        Cond::Gt | Cond::Ge => {
            let strict = u64::from(cond == Cond::Gt);
            // a > b: a >= b.umin + 1 and b <= a.umax - 1.
            let Some(lo) = b.umin.checked_add(strict) else {
                return false;
            };
            let Some(hi) = a.umax.checked_sub(strict) else {
                return false;
            };
            a.umin = a.umin.max(lo);
            b.umax = b.umax.min(hi);
        }
        Cond::Sgt | Cond::Sge => {
            let strict = i64::from(cond == Cond::Sgt);
            let Some(lo) = b.smin.checked_add(strict) else {
                return false;
            };
            let Some(hi) = a.smax.checked_sub(strict) else {
                return false;
            };
            if lo > smax_all || hi < smin_all {
                return false;
            }
            a.smin = a.smin.max(lo);
            b.smax = b.smax.min(hi);
        }
        Cond::Lt | Cond::Le | Cond::Slt | Cond::Sle => {
            return refine_views(b, a, cond.swap(), width);
        }
        Cond::Set => {
            if (a.var.umax() & b.var.umax()) == 0 {
                return false;
            }
            let (ka, kb) = (a.konst(), b.konst());
            for (r, k) in [(&mut *a, kb), (&mut *b, ka)] {
                if let Some(c) = k {
                    // One possible bit: it must be set.
                    if c.is_power_of_two() {
                        r.var = r.var.or(Tnum::konst(c));
                    }
                }
            }
        }
        Cond::NotSet => {
            if a.var.value & b.var.value != 0 {
                return false;
            }
            let (ka, kb) = (a.konst(), b.konst());
            for (r, k) in [(&mut *a, kb), (&mut *b, ka)] {
                if let Some(c) = k {
                    r.var = r.var.and(Tnum::konst(!c));
                }
            }
        }
    }
    a.umin <= a.umax && b.umin <= b.umax && a.smin <= a.smax && b.smin <= b.smax
}

fn sign(c: u64, width: Width) -> i64 {
    match width {
        Width::W64 => c as i64,
        Width::W32 => i64::from(c as u32 as i32),
    }
}

/// Narrows `a` and `b` (in place) to the members where `a COND b` holds at
/// `width`. Returns `false` when that is impossible: the branch is dead.
pub fn refine(a: &mut Scalar, b: &mut Scalar, cond: Cond, width: Width) -> bool {
    let (mut va, mut vb) = (View::of(a, width), View::of(b, width));
    if !refine_views(&mut va, &mut vb, cond, width) {
        return false;
    }
    va.store(a, width);
    vb.store(b, width);
    a.sync() && b.sync()
}

/// The outcome of a comparison for both directions: the narrowed operands
/// where it holds and where it does not, `None` for a direction no member
/// can take.
pub type Outcome = (Option<(Scalar, Scalar)>, Option<(Scalar, Scalar)>);

/// Both directions of `a COND b`.
pub fn branch(a: &Scalar, b: &Scalar, cond: Cond, width: Width) -> Outcome {
    let side = |c: Cond| {
        let (mut x, mut y) = (*a, *b);
        refine(&mut x, &mut y, c, width).then_some((x, y))
    };
    (side(cond), side(cond.negate()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn interesting(&mut self) -> u64 {
            match self.next() % 8 {
                0 => self.next() % 16,
                1 => (self.next() % 16).wrapping_neg(),
                2 => 1 << (self.next() % 64),
                3 => self.next() & 0xffff_ffff,
                4 => (1u64 << 63).wrapping_add(self.next() % 8).wrapping_sub(4),
                5 => 0xffff_ffffu64.wrapping_add(self.next() % 8).wrapping_sub(4),
                _ => self.next(),
            }
        }
    }

    /// A random abstract scalar and one of its members.
    fn abstract_with_member(r: &mut Rng) -> (Scalar, u64) {
        let x = r.interesting();
        let s = match r.next() % 6 {
            0 => Scalar::konst(x),
            1 => {
                let w = r.next() % 300;
                Scalar::urange(x.saturating_sub(w), x.saturating_add(r.next() % 300))
            }
            2 => {
                let w = (r.next() % 300) as i64;
                let sx = x as i64;
                Scalar::srange(sx.saturating_sub(w), sx.saturating_add(w))
            }
            3 => {
                let mask = r.next() & r.next();
                let mut s = Scalar::UNKNOWN;
                s.var = Tnum {
                    value: x & !mask,
                    mask,
                };
                s.sync();
                s
            }
            4 => {
                let mut s = Scalar::UNKNOWN;
                let lo = (x as u32).saturating_sub((r.next() % 100) as u32);
                s.u32min = lo;
                s.u32max = (x as u32).saturating_add((r.next() % 100) as u32);
                s.sync();
                s
            }
            _ => Scalar::UNKNOWN,
        };
        assert!(s.contains(x), "{s} must contain {x:#x}");
        (s, x)
    }

    const OPS: [AluOp; 17] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::Sdiv,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::Smod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Movsx(8),
        AluOp::Movsx(16),
        AluOp::Movsx(32),
        AluOp::Arsh,
    ];

    #[test]
    fn alu_over_approximates() {
        let mut r = Rng(1);
        for i in 0..200_000 {
            let (a, x) = abstract_with_member(&mut r);
            let (b, y) = abstract_with_member(&mut r);
            let op = OPS[i % OPS.len()];
            for width in [Width::W64, Width::W32] {
                if width == Width::W32 && op == AluOp::Movsx(32) {
                    continue;
                }
                let res = alu(op, width, &a, &b);
                let v = eval_alu(op, width, x, y);
                assert!(
                    res.contains(v),
                    "{op:?} {width:?}: {a} op {b} = {res}, misses {x:#x} op {y:#x} = {v:#x}"
                );
            }
            let n = neg(Width::W64, &a);
            assert!(n.contains(x.wrapping_neg()));
            for bytes in [1, 2, 4, 8] {
                let m = if bytes == 8 {
                    u64::MAX
                } else {
                    (1 << (bytes * 8)) - 1
                };
                assert!(a.cast(bytes).contains(x & m), "cast {bytes} of {a}");
            }
            for bits in [8, 16, 32] {
                let v = match bits {
                    8 => x as i8 as i64 as u64,
                    16 => x as i16 as i64 as u64,
                    _ => x as i32 as i64 as u64,
                };
                assert!(a.sext(bits).contains(v), "sext {bits} of {a}");
            }
        }
    }

    #[test]
    fn branches_keep_every_satisfying_pair() {
        let conds = [
            Cond::Eq,
            Cond::Ne,
            Cond::Gt,
            Cond::Ge,
            Cond::Lt,
            Cond::Le,
            Cond::Sgt,
            Cond::Sge,
            Cond::Slt,
            Cond::Sle,
            Cond::Set,
            Cond::NotSet,
        ];
        let mut r = Rng(2);
        for i in 0..300_000 {
            let (a, x) = abstract_with_member(&mut r);
            let (b, mut y) = abstract_with_member(&mut r);
            let mut b = b;
            if i % 5 == 0 {
                b = Scalar::konst(x);
                y = x;
            }
            let cond = conds[i % conds.len()];
            for width in [Width::W64, Width::W32] {
                let (t, f) = branch(&a, &b, cond, width);
                let holds = cond.eval(width, x, y);
                let side = if holds { t } else { f };
                let Some((na, nb)) = side else {
                    panic!("{cond:?} {width:?}: {a} vs {b} declared impossible but {x:#x},{y:#x} takes it");
                };
                assert!(
                    na.contains(x) && nb.contains(y),
                    "{cond:?} {width:?} ({holds}): {a} vs {b} refined to {na} / {nb}, losing {x:#x},{y:#x}"
                );
            }
        }
    }

    #[test]
    fn sync_tightens() {
        let mut s = Scalar::urange(0, 255);
        assert!(s.sync());
        assert_eq!(s.smin, 0);
        assert_eq!(s.smax, 255);
        assert_eq!(s.u32max, 255);
        assert_eq!(s.var, Tnum::range(0, 255));
        let mut c = Scalar::UNKNOWN;
        c.umin = 5;
        c.umax = 5;
        assert!(c.sync());
        assert_eq!(c.const_value(), Some(5));
        // Bounds that contradict are detected.
        let mut e = Scalar::konst(4);
        e.umin = 5;
        assert!(!e.sync());
    }

    #[test]
    fn comparisons_decide_when_they_can() {
        let a = Scalar::urange(0, 10);
        let (t, f) = branch(&a, &Scalar::konst(20), Cond::Lt, Width::W64);
        assert!(t.is_some() && f.is_none());
        let (t, f) = branch(&a, &Scalar::konst(5), Cond::Gt, Width::W64);
        let (na, _) = t.unwrap();
        assert_eq!((na.umin, na.umax), (6, 10));
        let (na, _) = f.unwrap();
        assert_eq!((na.umin, na.umax), (0, 5));
        let (t, f) = branch(&Scalar::konst(3), &Scalar::konst(3), Cond::Eq, Width::W32);
        assert!(t.is_some() && f.is_none());
    }
}
