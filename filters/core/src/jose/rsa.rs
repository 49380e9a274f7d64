//! RSA signature verification (RFC 8017 §8.1.2 RSASSA-PSS-VERIFY, §8.2.2
//! RSASSA-PKCS1-V1_5-VERIFY), public-key operation only.
//!
//! Small on purpose (bench/README.md, "Size": the general `rsa` + `crypto-bigint` code was
//! ~100 KB of every module). Everything here is public (key, message, signature), so
//! variable time is fine. Montgomery multiplication on 32-bit limbs (64-bit products, native
//! in Wasm); tested against the Wycheproof RSA vectors (`tests/alg_vectors.rs`,
//! `tests/jose_vectors.rs`).

use sha2::digest::Digest;

/// Largest modulus accepted, in bits (the Wycheproof matrix goes to 8192; the `rsa` crate's
/// limit before this verifier).
pub const RSA_MAX_BITS: usize = 8192;
/// Largest public exponent accepted: a huge `e` makes every verification slow (RSADoS; the
/// limit of *ring* and of the `rsa` crate before this verifier).
pub const RSA_MAX_EXPONENT: u64 = (1 << 33) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaError {
    /// Not a usable public key (even modulus or over [`RSA_MAX_BITS`], exponent not odd, or
    /// not in 3..=[`RSA_MAX_EXPONENT`] and below n).
    Key,
    /// The signature does not verify.
    Signature,
}

/// Big-endian bytes → little-endian 32-bit limbs, `len` limbs (zero-extended).
fn limbs(be: &[u8], len: usize) -> Vec<u32> {
    let mut out = vec![0u32; len];
    for (i, b) in be.iter().rev().enumerate() {
        if let Some(l) = out.get_mut(i / 4) {
            *l |= u32::from(*b) << (8 * (i % 4));
        }
    }
    out
}

/// Little-endian limbs → `len` big-endian bytes (the value must fit).
fn to_be(x: &[u32], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for (i, o) in out.iter_mut().rev().enumerate() {
        let l = x.get(i / 4).copied().unwrap_or(0);
        *o = (l >> (8 * (i % 4))) as u8;
    }
    out
}

/// `a >= b` for equal-length limb vectors.
fn ge(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` (equal lengths, `a >= b` or a borrow the caller discards).
fn sub_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(*y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
}

/// `x = 2x mod n` for `x < n`.
fn double_mod(x: &mut [u32], n: &[u32]) {
    let mut carry = 0u32;
    for l in x.iter_mut() {
        let top = *l >> 31;
        *l = (*l << 1) | carry;
        carry = top;
    }
    if carry == 1 || ge(x, n) {
        sub_in_place(x, n);
    }
}

struct Modulus {
    n: Vec<u32>,
    /// -n⁻¹ mod 2³².
    n0inv: u32,
}

impl Modulus {
    /// Montgomery product a·b·R⁻¹ mod n (R = 2^(32·len)); a, b < n. CIOS form.
    fn mul(&self, a: &[u32], b: &[u32]) -> Vec<u32> {
        let len = self.n.len();
        let mut t = vec![0u32; len + 2];
        for &bi in b {
            let mut c = 0u64;
            for (tj, &aj) in t.iter_mut().zip(a) {
                let s = u64::from(*tj) + u64::from(aj) * u64::from(bi) + c;
                *tj = s as u32;
                c = s >> 32;
            }
            for tj in t.iter_mut().skip(len) {
                let s = u64::from(*tj) + c;
                *tj = s as u32;
                c = s >> 32;
            }
            let m = t.first().copied().unwrap_or(0).wrapping_mul(self.n0inv);
            let mut c = 0u64;
            for (tj, &nj) in t.iter_mut().zip(&self.n) {
                let s = u64::from(*tj) + u64::from(m) * u64::from(nj) + c;
                *tj = s as u32;
                c = s >> 32;
            }
            for tj in t.iter_mut().skip(len) {
                let s = u64::from(*tj) + c;
                *tj = s as u32;
                c = s >> 32;
            }
            // The lowest limb is now zero: divide by 2³².
            t.remove(0);
            t.push(0);
        }
        let high = t.get(len).copied().unwrap_or(0);
        t.truncate(len);
        if high != 0 || ge(&t, &self.n) {
            sub_in_place(&mut t, &self.n);
        }
        t
    }
}

/// `sig^e mod n` as `n.len()` big-endian bytes (RFC 8017 §5.2.2 RSAVP1), for `sig < n`.
fn rsavp1(n_be: &[u8], e_be: &[u8], sig: &[u8]) -> Result<Vec<u8>, RsaError> {
    let k = n_be.len();
    let len = k.div_ceil(4);
    let n = limbs(n_be, len);
    let e = limbs(e_be, e_be.len().div_ceil(4).max(1));
    let n0 = n.first().copied().unwrap_or(0);
    let n_top = n.last().copied().unwrap_or(0);
    if n0 & 1 == 0 || n_top == 0 {
        return Err(RsaError::Key);
    }
    let n_bits = 32 * (len - 1) + (32 - n_top.leading_zeros() as usize);
    if n_bits > RSA_MAX_BITS {
        return Err(RsaError::Key);
    }
    // e: odd, 3 ≤ e ≤ 2³³ − 1, e < n.
    let e_value = e_be.iter().try_fold(0u64, |acc, b| {
        acc.checked_mul(256).map(|a| a | u64::from(*b))
    });
    match e_value {
        Some(v) if (3..=RSA_MAX_EXPONENT).contains(&v) && v & 1 == 1 => {}
        _ => return Err(RsaError::Key),
    }
    let e_stripped = e_be
        .iter()
        .position(|b| *b != 0)
        .and_then(|i| e_be.get(i..))
        .unwrap_or_default();
    if e_stripped.len() > k || (e_stripped.len() == k && e_stripped >= n_be) {
        return Err(RsaError::Key);
    }
    // RFC 8017 §5.2.2 step 1: the signature representative must be below n.
    if sig.len() != k || sig >= n_be {
        return Err(RsaError::Signature);
    }
    // -n⁻¹ mod 2³² by Newton's iteration (n odd): each step doubles the correct bits.
    let mut inv = 1u32;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
    }
    let m = Modulus {
        n,
        n0inv: inv.wrapping_neg(),
    };
    // R² mod n: R mod n from the top bit of n by doublings, then 2^s·R by s more doublings,
    // then squarings in Montgomery form (2^s → 2^(2s) → ...) up to 2^(32·len) = R.
    let bits = 32 * len;
    let mut x = vec![0u32; len];
    if let Some(l) = x.get_mut((n_bits - 1) / 32) {
        *l = 1 << ((n_bits - 1) % 32);
    }
    let squarings = bits.trailing_zeros() as usize;
    let s = bits >> squarings;
    for _ in 0..(bits - (n_bits - 1)) + s {
        double_mod(&mut x, &m.n);
    }
    for _ in 0..squarings {
        x = m.mul(&x, &x);
    }
    let r2 = x;
    // Square and multiply over e's bits, most significant first (e is public).
    let base = m.mul(&limbs(sig, len), &r2);
    let mut acc: Option<Vec<u32>> = None;
    for limb in e.iter().rev() {
        for i in (0..32).rev() {
            if let Some(a) = acc.as_mut() {
                *a = m.mul(a, a);
            }
            if (limb >> i) & 1 == 1 {
                acc = Some(match acc {
                    Some(a) => m.mul(&a, &base),
                    None => base.clone(),
                });
            }
        }
    }
    let mut one = vec![0u32; len];
    if let Some(l) = one.first_mut() {
        *l = 1;
    }
    let acc = acc.ok_or(RsaError::Key)?;
    Ok(to_be(&m.mul(&acc, &one), k))
}

/// The DER `DigestInfo` prefix (RFC 8017 §9.2 note 1) for a hash of `hash_len` octets.
fn digest_info_prefix(hash_len: usize) -> Option<&'static [u8]> {
    const SHA256: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const SHA384: [u8; 19] = [
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    const SHA512: [u8; 19] = [
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
    match hash_len {
        32 => Some(&SHA256),
        48 => Some(&SHA384),
        64 => Some(&SHA512),
        _ => None,
    }
}

/// RFC 8017 §8.2.2: RSASSA-PKCS1-v1_5 with hash `D`; the encoding is rebuilt and compared
/// whole (§9.2: only the DER `DigestInfo` with its NULL parameters is accepted).
pub fn pkcs1v15_verify<D: Digest>(
    n: &[u8],
    e: &[u8],
    msg: &[u8],
    sig: &[u8],
) -> Result<(), RsaError> {
    let em = rsavp1(n, e, sig)?;
    let hash = D::digest(msg);
    let prefix = digest_info_prefix(hash.len()).ok_or(RsaError::Signature)?;
    let t_len = prefix.len() + hash.len();
    let k = n.len();
    if k < t_len + 11 {
        return Err(RsaError::Signature);
    }
    let mut want = Vec::with_capacity(k);
    want.extend_from_slice(&[0x00, 0x01]);
    want.resize(k - t_len - 1, 0xff);
    want.push(0x00);
    want.extend_from_slice(prefix);
    want.extend_from_slice(&hash);
    if em == want {
        Ok(())
    } else {
        Err(RsaError::Signature)
    }
}

/// RFC 8017 §9.1.2 EMSA-PSS-VERIFY with hash `D` for the message and MGF1, salt length =
/// hash length (RFC 7518 §3.5).
pub fn pss_verify<D: Digest>(n: &[u8], e: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), RsaError> {
    let m = rsavp1(n, e, sig)?;
    let top = n.first().copied().unwrap_or(0);
    let mod_bits = 8 * n.len() - top.leading_zeros() as usize;
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    // I2OSP(m, emLen): when emLen = k - 1 the leading octet of m must be zero (§8.1.2 2c).
    let (lead, em) = m.split_at(m.len() - em_len);
    if lead.iter().any(|b| *b != 0) {
        return Err(RsaError::Signature);
    }
    let h_len = <D as Digest>::output_size();
    let s_len = h_len;
    let m_hash = D::digest(msg);
    // Steps 3-5.
    if em_len < h_len + s_len + 2 || em.last() != Some(&0xbc) {
        return Err(RsaError::Signature);
    }
    let db_len = em_len - h_len - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let h = rest.get(..h_len).ok_or(RsaError::Signature)?;
    // Step 6: the 8·emLen − emBits leftmost bits must be zero.
    let zero_bits = 8 * em_len - em_bits;
    let top_mask = (0xffu16 >> zero_bits) as u8;
    if masked_db.first().copied().unwrap_or(0) & !top_mask != 0 {
        return Err(RsaError::Signature);
    }
    // Steps 7-9: DB = maskedDB ⊕ MGF1(H, db_len) (RFC 8017 B.2.1), top bits cleared.
    let mut db = masked_db.to_vec();
    let mut counter: u32 = 0;
    let mut at = 0;
    while at < db_len {
        let block = D::new()
            .chain_update(h)
            .chain_update(counter.to_be_bytes())
            .finalize();
        for (d, m) in db.iter_mut().skip(at).zip(block.iter()) {
            *d ^= m;
        }
        at += h_len;
        counter += 1;
    }
    if let Some(first) = db.first_mut() {
        *first &= top_mask;
    }
    // Step 10: PS zeros, then 0x01, then the salt.
    let ps_len = db_len - s_len - 1;
    let (ps, rest) = db.split_at(ps_len);
    if ps.iter().any(|b| *b != 0) || rest.first() != Some(&0x01) {
        return Err(RsaError::Signature);
    }
    let salt = rest.get(1..).ok_or(RsaError::Signature)?;
    // Steps 12-14: H' = Hash(0x00 × 8 ‖ mHash ‖ salt) must equal H.
    let h2 = D::new()
        .chain_update([0u8; 8])
        .chain_update(&m_hash)
        .chain_update(salt)
        .finalize();
    if h2.as_slice() == h {
        Ok(())
    } else {
        Err(RsaError::Signature)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn small_modulus_arithmetic() {
        // 3233 = 61 · 53, e = 17: 65^17 mod 3233 = 2790 (the textbook example).
        let n = 3233u32.to_be_bytes();
        let n = &n[2..];
        let got = rsavp1(n, &[17], &[0x00, 0x41]).unwrap();
        assert_eq!(got, vec![0x0a, 0xe6]); // 2790
                                           // A signature at or above n is out of range; e = 1 and even e are not keys.
        assert_eq!(rsavp1(n, &[17], &[0x0c, 0xa1]), Err(RsaError::Signature));
        assert_eq!(rsavp1(n, &[1], &[0x00, 0x02]), Err(RsaError::Key));
        assert_eq!(rsavp1(n, &[16], &[0x00, 0x02]), Err(RsaError::Key));
        assert_eq!(
            rsavp1(&[0x0c, 0xa0], &[3], &[0x00, 0x02]),
            Err(RsaError::Key)
        );
        // e ≥ n, and e over 2³³ − 1 (RSADoS), are refused; 2³³ − 1 itself is a key.
        assert_eq!(rsavp1(n, &[0x0c, 0xa1], &[0x00, 0x02]), Err(RsaError::Key));
        let big_n = [0xff; 8];
        let at_max = RSA_MAX_EXPONENT.to_be_bytes();
        assert!(rsavp1(&big_n, &at_max, &[0; 8]).is_ok());
        let over = (RSA_MAX_EXPONENT + 2).to_be_bytes();
        assert_eq!(rsavp1(&big_n, &over, &[0; 8]), Err(RsaError::Key));
        // A modulus over 8192 bits is refused; 8192 bits is a key.
        let mut n8192 = vec![0xff; 1024];
        assert!(rsavp1(&n8192, &[3], &vec![0; 1024]).is_ok());
        n8192.insert(0, 1);
        assert_eq!(rsavp1(&n8192, &[3], &vec![0; 1025]), Err(RsaError::Key));
    }

    #[test]
    fn multi_limb_modexp_matches_plain_arithmetic() {
        // n = 2^61 - 1 (prime, odd, 2 limbs), e = 65537; compare with u128 arithmetic.
        let n: u64 = (1 << 61) - 1;
        for x in [2u64, 3, 12_345_678_901, n - 1] {
            let mut r: u128 = 1;
            let mut b = u128::from(x);
            let mut e = 65537u32;
            while e > 0 {
                if e & 1 == 1 {
                    r = r * b % u128::from(n);
                }
                b = b * b % u128::from(n);
                e >>= 1;
            }
            let got = rsavp1(&n.to_be_bytes(), &[1, 0, 1], &x.to_be_bytes()).unwrap();
            assert_eq!(u64::from_be_bytes(got.try_into().unwrap()), r as u64, "{x}");
        }
    }

    /// RSAVP1 against an independent big-integer library (`num-bigint`'s `modpow`) on random
    /// moduli of 1 to 4096 bits, exponents 3, 65537 and random odd ones up to 2^33 - 1, and
    /// random signature representatives below n: the Montgomery code must agree on every one.
    #[test]
    fn modexp_matches_num_bigint() {
        use num_bigint::BigUint;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64*: deterministic, so a failure reproduces.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let bytes = |len: usize, next: &mut dyn FnMut() -> u64| -> Vec<u8> {
            (0..len).map(|_| next() as u8).collect()
        };
        let mut checked = 0;
        for round in 0..400 {
            let k = 1 + (next() as usize % 512);
            let mut n = bytes(k, &mut next);
            n[0] |= 0x80 >> (round % 8); // top byte nonzero, various bit lengths
            n[k - 1] |= 1; // odd
            let e: u64 = match round % 3 {
                0 => 3,
                1 => 65537,
                _ => (next() % RSA_MAX_EXPONENT) | 1 | 2,
            };
            let e_be: Vec<u8> = e
                .to_be_bytes()
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            let n_big = BigUint::from_bytes_be(&n);
            let mut sig = bytes(k, &mut next);
            if round % 5 == 0 {
                sig = vec![0; k];
                sig[k - 1] = (round % 3) as u8; // 0, 1, 2: edge values
            }
            let s_big = BigUint::from_bytes_be(&sig);
            let got = rsavp1(&n, &e_be, &sig);
            if s_big >= n_big || BigUint::from(e) >= n_big {
                assert!(got.is_err(), "round {round}: out of range accepted");
                continue;
            }
            let want = s_big.modpow(&BigUint::from(e), &n_big).to_bytes_be();
            let mut want_k = vec![0u8; k - want.len()];
            want_k.extend_from_slice(&want);
            assert_eq!(got.unwrap(), want_k, "round {round}, k {k}, e {e}");
            checked += 1;
        }
        assert!(checked > 250, "only {checked} compared");
    }
}
