//! Registration codes: what an installer types into a recorder to choose its account.
//!
//! A code is 24 symbols of Crockford base32, shown in six groups of four:
//! a 4-symbol public id (names the code; safe in logs and as a rate-limit key),
//! a 19-symbol secret (95 bits, only its hash is stored on the server) and one check
//! symbol. The check symbol comes from a Damm-style check over GF(32), so every
//! single mistyped symbol and every swap of two neighbouring symbols is caught on the
//! recorder before any request is made. Only the 32 symbols that a keypad can type are
//! used; Crockford's `* ~ $ = U` check extras are not.

use std::fmt;
use std::str::FromStr;

/// The 32 symbols, in value order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Symbols in the public id.
pub const PUBLIC_LEN: usize = 4;
/// Symbols in the secret: 19 × 5 = 95 bits.
pub const SECRET_LEN: usize = 19;
/// Symbols in a whole code, the check symbol included.
pub const CODE_LEN: usize = PUBLIC_LEN + SECRET_LEN + 1;

/// Why a typed code is not a registration code. Every message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error(
        "the registration code is empty: type the code shown for the account, like ABCD-EFGH-…"
    )]
    Empty,
    #[error(
        "the registration code contains {found:?}, which is not used in codes: codes use the digits 0-9 and letters A-Z without I, L, O and U"
    )]
    BadSymbol { found: char },
    #[error(
        "the registration code has {found} letters and digits but a code has {CODE_LEN}: check that no group is missing or repeated"
    )]
    WrongLength { found: usize },
    #[error(
        "the registration code has a typo (its check symbol does not match): compare it with the code shown for the account, symbol by symbol"
    )]
    Typo,
}

/// A registration code that passed the typo check. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationCode {
    /// Values 0..32 of all `CODE_LEN` symbols.
    symbols: [u8; CODE_LEN],
}

impl RegistrationCode {
    /// Builds a code from a public id and a secret, both given as symbol values
    /// (`0..32`), computing the check symbol. Used by the server when it mints codes.
    ///
    /// # Panics
    /// When a value is 32 or more: callers generate values by masking random bytes.
    pub fn from_parts(public: [u8; PUBLIC_LEN], secret: [u8; SECRET_LEN]) -> Self {
        let mut symbols = [0u8; CODE_LEN];
        symbols[..PUBLIC_LEN].copy_from_slice(&public);
        symbols[PUBLIC_LEN..CODE_LEN - 1].copy_from_slice(&secret);
        assert!(symbols.iter().all(|v| *v < 32), "symbol values are 0..32");
        symbols[CODE_LEN - 1] = check_symbol(&symbols[..CODE_LEN - 1]);
        RegistrationCode { symbols }
    }

    /// Makes a fresh code from 23 random bytes (the caller's CSPRNG keeps this crate
    /// free of I/O); only the low five bits of each byte are used.
    pub fn from_random(random: [u8; PUBLIC_LEN + SECRET_LEN]) -> Self {
        let mut public = [0u8; PUBLIC_LEN];
        let mut secret = [0u8; SECRET_LEN];
        for (dst, src) in public.iter_mut().zip(&random[..PUBLIC_LEN]) {
            *dst = src & 31;
        }
        for (dst, src) in secret.iter_mut().zip(&random[PUBLIC_LEN..]) {
            *dst = src & 31;
        }
        Self::from_parts(public, secret)
    }

    /// The public id, e.g. `K7QD`: names the code in logs, audit entries and rate limits.
    pub fn public_id(&self) -> String {
        encode(&self.symbols[..PUBLIC_LEN])
    }

    /// The secret part as text; the server hashes it and never stores it.
    pub fn secret(&self) -> String {
        encode(&self.symbols[PUBLIC_LEN..CODE_LEN - 1])
    }

    /// The canonical form without separators, which is also what goes on the wire.
    pub fn compact(&self) -> String {
        encode(&self.symbols)
    }
}

impl FromStr for RegistrationCode {
    type Err = CodeError;

    /// Accepts what a person types: any case, dashes and spaces anywhere,
    /// `O` for `0` and `I`/`L` for `1`.
    fn from_str(typed: &str) -> Result<Self, CodeError> {
        let mut values = Vec::with_capacity(CODE_LEN);
        for c in typed.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            values.push(decode_symbol(c).ok_or(CodeError::BadSymbol { found: c })?);
        }
        if values.is_empty() {
            return Err(CodeError::Empty);
        }
        if values.len() != CODE_LEN {
            return Err(CodeError::WrongLength {
                found: values.len(),
            });
        }
        if damm(&values) != 0 {
            return Err(CodeError::Typo);
        }
        let mut symbols = [0u8; CODE_LEN];
        symbols.copy_from_slice(&values);
        Ok(RegistrationCode { symbols })
    }
}

/// Grouped by four, as shown to people: `K7QD-2M9X-…`.
impl fmt::Display for RegistrationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.symbols.chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(&encode(chunk))?;
        }
        Ok(())
    }
}

/// Only the public id: a code must never reach a log through `{:?}`.
impl fmt::Debug for RegistrationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistrationCode({}-****)", self.public_id())
    }
}

fn encode(values: &[u8]) -> String {
    values
        .iter()
        .map(|v| ALPHABET[*v as usize] as char)
        .collect()
}

fn decode_symbol(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        other => other,
    };
    ALPHABET
        .iter()
        .position(|a| *a as char == c)
        .map(|p| p as u8)
}

/// Multiplication by the primitive element `x` in GF(32) = GF(2)[x]/(x^5 + x^2 + 1).
fn times_x(v: u8) -> u8 {
    let shifted = v << 1;
    if shifted & 0b10_0000 != 0 {
        shifted ^ 0b10_0101
    } else {
        shifted
    }
}

/// Damm's algorithm over the quasigroup `a ∘ b = x·a + b` of GF(32), which is totally
/// anti-symmetric because `x ≠ 1`: a single substitution or an adjacent transposition
/// always changes the result. A valid code folds to 0.
fn damm(values: &[u8]) -> u8 {
    values.iter().fold(0, |acc, v| times_x(acc) ^ v)
}

fn check_symbol(body: &[u8]) -> u8 {
    times_x(damm(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_code() -> impl Strategy<Value = RegistrationCode> {
        proptest::array::uniform23(any::<u8>()).prop_map(RegistrationCode::from_random)
    }

    #[test]
    fn display_groups_by_four_and_parses_back() {
        let code = RegistrationCode::from_random([7; 23]);
        let shown = code.to_string();
        assert_eq!(shown.len(), CODE_LEN + 5);
        assert_eq!(shown.split('-').count(), 6);
        assert_eq!(shown.parse::<RegistrationCode>().unwrap(), code);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let code = RegistrationCode::from_random([9; 23]);
        let debug = format!("{code:?}");
        assert!(debug.contains(&code.public_id()));
        assert!(!debug.contains(&code.secret()));
    }

    #[test]
    fn typed_forms_are_normalised() {
        let code = RegistrationCode::from_parts([0, 1, 1, 0], [1; SECRET_LEN]);
        let canonical = code.compact();
        assert!(canonical.starts_with("0110"));
        // Lower case, O for zero, I and L for one, spaces and dashes anywhere.
        let sloppy: String = canonical
            .chars()
            .enumerate()
            .map(|(i, c)| match i {
                0 => "o".to_string(),
                1 => "I".to_string(),
                2 => " l-".to_string(),
                _ => c.to_ascii_lowercase().to_string(),
            })
            .collect();
        assert_eq!(sloppy.parse::<RegistrationCode>().unwrap(), code);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!("".parse::<RegistrationCode>(), Err(CodeError::Empty));
        assert_eq!(" - ".parse::<RegistrationCode>(), Err(CodeError::Empty));
        assert_eq!(
            "ABCU".parse::<RegistrationCode>(),
            Err(CodeError::BadSymbol { found: 'U' })
        );
        assert_eq!(
            "ABCD-EFGH".parse::<RegistrationCode>(),
            Err(CodeError::WrongLength { found: 8 })
        );
        let code = RegistrationCode::from_random([3; 23]).compact();
        let mut extra = code.clone();
        extra.push('0');
        assert_eq!(
            extra.parse::<RegistrationCode>(),
            Err(CodeError::WrongLength { found: 25 })
        );
    }

    #[test]
    fn gf32_multiplication_by_x_is_a_permutation() {
        let mut seen = [false; 32];
        for v in 0..32u8 {
            let m = times_x(v);
            assert!(m < 32);
            assert!(!seen[m as usize]);
            seen[m as usize] = true;
        }
    }

    proptest! {
        #[test]
        fn every_code_round_trips_through_its_shown_and_compact_forms(code in any_code()) {
            prop_assert_eq!(code.to_string().parse::<RegistrationCode>().unwrap(), code.clone());
            prop_assert_eq!(code.compact().parse::<RegistrationCode>().unwrap(), code.clone());
            prop_assert_eq!(code.to_string().to_lowercase().parse::<RegistrationCode>().unwrap(), code);
        }

        #[test]
        fn every_single_symbol_typo_is_detected(code in any_code()) {
            let symbols = code.compact().into_bytes();
            for pos in 0..CODE_LEN {
                for &replacement in ALPHABET.iter() {
                    if replacement == symbols[pos] {
                        continue;
                    }
                    let mut typo = symbols.clone();
                    typo[pos] = replacement;
                    let typo = String::from_utf8(typo).unwrap();
                    prop_assert_eq!(typo.parse::<RegistrationCode>(), Err(CodeError::Typo), "{}", typo);
                }
            }
        }

        #[test]
        fn every_swap_of_neighbouring_symbols_is_detected(code in any_code()) {
            let symbols = code.compact().into_bytes();
            for pos in 0..CODE_LEN - 1 {
                if symbols[pos] == symbols[pos + 1] {
                    continue;
                }
                let mut swapped = symbols.clone();
                swapped.swap(pos, pos + 1);
                let swapped = String::from_utf8(swapped).unwrap();
                prop_assert_eq!(swapped.parse::<RegistrationCode>(), Err(CodeError::Typo));
            }
        }
    }
}
