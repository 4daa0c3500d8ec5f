//! Tracked numbers: which bits of a 64-bit value are known.
//!
//! A [`Tnum`] is Linux's `struct tnum` (kernel/bpf/tnum.c): `value` holds
//! the bits known to be 1, `mask` the bits that are unknown; a bit set in
//! neither is known to be 0. `value & mask == 0` always holds. The set a
//! tnum stands for is `{ x | x & !mask == value }`.
//!
//! Every operation here over-approximates: for any members `a` of `A` and
//! `b` of `B`, `a OP b` is a member of `A.op(B)`. The unit tests check this
//! on random members.

use std::fmt;

/// A partially known 64-bit value (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tnum {
    /// Bits known to be 1.
    pub value: u64,
    /// Bits whose value is unknown.
    pub mask: u64,
}

impl fmt::Debug for Tnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:#x}; {:#x})", self.value, self.mask)
    }
}

impl Tnum {
    /// Nothing known.
    pub const UNKNOWN: Tnum = Tnum {
        value: 0,
        mask: u64::MAX,
    };

    /// The tnum of one known value.
    pub const fn konst(value: u64) -> Tnum {
        Tnum { value, mask: 0 }
    }

    /// The smallest tnum containing every value of `min..=max`.
    pub fn range(min: u64, max: u64) -> Tnum {
        let chi = min ^ max;
        let bits = 64 - chi.leading_zeros();
        if bits > 63 {
            return Tnum::UNKNOWN;
        }
        let delta = (1u64 << bits) - 1;
        Tnum {
            value: min & !delta,
            mask: delta,
        }
    }

    /// Whether every bit is known.
    pub const fn is_const(self) -> bool {
        self.mask == 0
    }

    /// Whether nothing is known.
    pub const fn is_unknown(self) -> bool {
        self.mask == u64::MAX
    }

    /// Whether `v` is a member.
    pub const fn contains(self, v: u64) -> bool {
        v & !self.mask == self.value
    }

    /// Whether every member of `other` is a member of `self`.
    pub const fn includes(self, other: Tnum) -> bool {
        if other.mask & !self.mask != 0 {
            return false;
        }
        other.value & !self.mask == self.value
    }

    /// Smallest member, read as unsigned.
    pub const fn umin(self) -> u64 {
        self.value
    }

    /// Largest member, read as unsigned.
    pub const fn umax(self) -> u64 {
        self.value | self.mask
    }

    /// Smallest member, read as signed.
    pub const fn smin(self) -> i64 {
        (self.value | (self.mask & (1 << 63))) as i64
    }

    /// Largest member, read as signed.
    pub const fn smax(self) -> i64 {
        (self.value | (self.mask & !(1 << 63))) as i64
    }

    /// `self << shift` (shift below 64).
    pub const fn lshift(self, shift: u32) -> Tnum {
        Tnum {
            value: self.value << shift,
            mask: self.mask << shift,
        }
    }

    /// Logical `self >> shift` (shift below 64).
    pub const fn rshift(self, shift: u32) -> Tnum {
        Tnum {
            value: self.value >> shift,
            mask: self.mask >> shift,
        }
    }

    /// Arithmetic `self >> shift` on 64 bits (shift below 64).
    pub const fn arshift(self, shift: u32) -> Tnum {
        Tnum {
            value: ((self.value as i64) >> shift) as u64,
            mask: ((self.mask as i64) >> shift) as u64,
        }
    }

    /// `self + other` (wrapping).
    pub const fn add(self, other: Tnum) -> Tnum {
        let sm = self.mask.wrapping_add(other.mask);
        let sv = self.value.wrapping_add(other.value);
        let sigma = sm.wrapping_add(sv);
        let chi = sigma ^ sv;
        let mu = chi | self.mask | other.mask;
        Tnum {
            value: sv & !mu,
            mask: mu,
        }
    }

    /// `self - other` (wrapping).
    pub const fn sub(self, other: Tnum) -> Tnum {
        let dv = self.value.wrapping_sub(other.value);
        let alpha = dv.wrapping_add(self.mask);
        let beta = dv.wrapping_sub(other.mask);
        let chi = alpha ^ beta;
        let mu = chi | self.mask | other.mask;
        Tnum {
            value: dv & !mu,
            mask: mu,
        }
    }

    /// `-self` (wrapping).
    pub const fn neg(self) -> Tnum {
        Tnum::konst(0).sub(self)
    }

    /// `self & other`.
    pub const fn and(self, other: Tnum) -> Tnum {
        let alpha = self.value | self.mask;
        let beta = other.value | other.mask;
        let v = self.value & other.value;
        Tnum {
            value: v,
            mask: alpha & beta & !v,
        }
    }

    /// `self | other`.
    pub const fn or(self, other: Tnum) -> Tnum {
        let v = self.value | other.value;
        let mu = self.mask | other.mask;
        Tnum {
            value: v,
            mask: mu & !v,
        }
    }

    /// `self ^ other`.
    pub const fn xor(self, other: Tnum) -> Tnum {
        let v = self.value ^ other.value;
        let mu = self.mask | other.mask;
        Tnum {
            value: v & !mu,
            mask: mu,
        }
    }

    /// `self * other` (wrapping), as Linux's `tnum_mul`.
    pub const fn mul(self, other: Tnum) -> Tnum {
        let acc_v = self.value.wrapping_mul(other.value);
        let mut acc_m = Tnum::konst(0);
        let (mut a, mut b) = (self, other);
        while a.value != 0 || a.mask != 0 {
            if a.value & 1 != 0 {
                acc_m = acc_m.add(Tnum {
                    value: 0,
                    mask: b.mask,
                });
            } else if a.mask & 1 != 0 {
                acc_m = acc_m.add(Tnum {
                    value: 0,
                    mask: b.value | b.mask,
                });
            }
            a = a.rshift(1);
            b = b.lshift(1);
        }
        Tnum::konst(acc_v).add(acc_m)
    }

    /// The members of both, or `None` when they share none.
    pub const fn intersect(self, other: Tnum) -> Option<Tnum> {
        if (self.value ^ other.value) & !(self.mask | other.mask) != 0 {
            return None;
        }
        let v = self.value | other.value;
        let mu = self.mask & other.mask;
        Some(Tnum {
            value: v & !mu,
            mask: mu,
        })
    }

    /// The low `bytes` bytes (1, 2, 4 or 8), zero-extended.
    pub const fn cast(self, bytes: u32) -> Tnum {
        if bytes >= 8 {
            return self;
        }
        let m = (1u64 << (bytes * 8)) - 1;
        Tnum {
            value: self.value & m,
            mask: self.mask & m,
        }
    }

    /// The low 32 bits, zero-extended.
    pub const fn subreg(self) -> Tnum {
        self.cast(4)
    }

    /// `self` with its low 32 bits replaced by those of `low`.
    pub const fn with_subreg(self, low: Tnum) -> Tnum {
        Tnum {
            value: (self.value & !0xffff_ffff) | (low.value & 0xffff_ffff),
            mask: (self.mask & !0xffff_ffff) | (low.mask & 0xffff_ffff),
        }
    }

    /// Whether every member is a multiple of `size` (a power of two).
    pub const fn is_aligned(self, size: u64) -> bool {
        (self.value | self.mask) & (size - 1) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (splitmix64).
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    fn random_tnum(r: &mut Rng) -> Tnum {
        let mask = match r.next() % 4 {
            0 => 0,
            1 => r.next() & 0xff,
            2 => r.next() & r.next(),
            _ => r.next(),
        };
        Tnum {
            value: r.next() & !mask,
            mask,
        }
    }

    fn member(t: Tnum, r: &mut Rng) -> u64 {
        t.value | (r.next() & t.mask)
    }

    #[test]
    fn operations_over_approximate() {
        let mut r = Rng(7);
        for _ in 0..20_000 {
            let (a, b) = (random_tnum(&mut r), random_tnum(&mut r));
            let (x, y) = (member(a, &mut r), member(b, &mut r));
            let s = (y % 64) as u32;
            assert!(a.add(b).contains(x.wrapping_add(y)));
            assert!(a.sub(b).contains(x.wrapping_sub(y)));
            assert!(a.mul(b).contains(x.wrapping_mul(y)));
            assert!(a.and(b).contains(x & y));
            assert!(a.or(b).contains(x | y));
            assert!(a.xor(b).contains(x ^ y));
            assert!(a.neg().contains(x.wrapping_neg()));
            assert!(a.lshift(s).contains(x << s));
            assert!(a.rshift(s).contains(x >> s));
            assert!(a.arshift(s).contains(((x as i64) >> s) as u64));
            assert!(a.cast(2).contains(x & 0xffff));
            assert!(a.umin() <= x && x <= a.umax());
            assert!(a.smin() <= x as i64 && x as i64 <= a.smax());
            let (lo, hi) = (x.min(y), x.max(y));
            let rg = Tnum::range(lo, hi);
            assert!(rg.contains(lo) && rg.contains(hi));
            if let Some(i) = a.intersect(Tnum::konst(x)) {
                assert!(i.contains(x));
            } else {
                panic!("{a:?} must intersect its member {x:#x}");
            }
            assert!(a.includes(Tnum::konst(x)));
        }
    }
}
