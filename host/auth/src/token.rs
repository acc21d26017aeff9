//! Bearer tokens: `fabric_<id>_<secret>`, a public 64-bit id and a 256-bit random secret.

use std::fmt;

const PREFIX: &str = "fabric_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// The length of a token's text: prefix, 16 hex digits, `_`, 64 hex digits.
const TEXT_LEN: usize = PREFIX.len() + 2 * ID_BYTES + 1 + 2 * SECRET_BYTES;

/// A bearer token. Its id names it in listings, audit records and `revoke`; its secret is
/// shown once, when issued, and stored only as a hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: [u8; ID_BYTES],
    secret: [u8; SECRET_BYTES],
}

/// Why a text is not a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not of the form `fabric_<16 hex digits>_<64 hex digits>`.
    #[error("not a Fabric token (expected fabric_ followed by 16 and 64 hex digits)")]
    Malformed,
    /// The operating system could not give random bytes.
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

impl Token {
    /// A new token from the operating system's random source.
    pub fn generate() -> Result<Token, TokenError> {
        let mut bytes = [0u8; ID_BYTES + SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        let mut token = Token {
            id: [0; ID_BYTES],
            secret: [0; SECRET_BYTES],
        };
        token.id.copy_from_slice(&bytes[..ID_BYTES]);
        token.secret.copy_from_slice(&bytes[ID_BYTES..]);
        Ok(token)
    }

    /// Reads a token's text (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.len() != TEXT_LEN || !text.is_ascii() {
            return Err(TokenError::Malformed);
        }
        let rest = text.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (id, secret) = rest.split_at(2 * ID_BYTES);
        let secret = secret.strip_prefix('_').ok_or(TokenError::Malformed)?;
        let mut token = Token {
            id: [0; ID_BYTES],
            secret: [0; SECRET_BYTES],
        };
        unhex(id, &mut token.id)?;
        unhex(secret, &mut token.secret)?;
        Ok(token)
    }

    /// The token's public id (16 hex digits).
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// What the registry stores: the hash of the secret (64 hex digits).
    pub fn hash(&self) -> String {
        blake3::hash(&self.secret).to_hex().to_string()
    }

    /// Whether the secret hashes to `stored` (a [`Token::hash`]), compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        match blake3::Hash::from_hex(stored) {
            // `blake3::Hash`'s equality is constant-time.
            Ok(stored) => blake3::hash(&self.secret) == stored,
            Err(_) => false,
        }
    }
}

/// The whole token: what its holder presents. Shown once; never logged.
impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}_{}", hex(&self.id), hex(&self.secret))
    }
}

/// Names the token by its id only, so that a stray `{:?}` leaks nothing.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.id())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(text: &str, out: &mut [u8]) -> Result<(), TokenError> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TokenError::Malformed),
    };
    for (pair, byte) in text.as_bytes().chunks_exact(2).zip(out.iter_mut()) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_token_reads_back_and_matches_only_its_own_hash() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), TEXT_LEN);
        assert_eq!(Token::parse(&format!(" {text}\n")).unwrap(), a);
        assert!(a.matches(&a.hash()));
        assert!(!b.matches(&a.hash()));
        assert!(!a.matches("not hex"));
        assert_eq!(format!("{a:?}"), format!("Token({})", a.id()));
        assert!(!format!("{a:?}").contains(&text[24..]));
    }

    #[test]
    fn near_misses_are_malformed() {
        let text = Token::generate().unwrap().to_string();
        for bad in [
            String::new(),
            text[1..].to_string(),
            format!("{text}0"),
            text.to_uppercase(),
            text.replacen('_', "-", 1),
            text.replace(&text[7..23], "zzzzzzzzzzzzzzzz"),
            format!("{}é{}", &text[..30], &text[32..]),
        ] {
            assert_eq!(Token::parse(&bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in ".{0,120}") {
            if let Ok(t) = Token::parse(&s) {
                prop_assert_eq!(t.to_string(), s.trim());
            }
        }
    }
}
