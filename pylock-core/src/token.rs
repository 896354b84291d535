//! Owner tokens: the random value a holder stores in the lock so that only it can release or
//! extend it (pylock 0.4 deleted the key unconditionally, so a slow client could delete the next
//! holder's lock).

use std::fmt;

use crate::error::{Error, Result};

/// A 128-bit owner token from the operating system's secure random source.
///
/// Every acquire of a [`Lock`](crate::Lock) draws a fresh token, which all the attempts of
/// that acquire share: an attempt whose reply was lost (the server set the key, the connection
/// dropped) is then recognised as ours by the next one. Backends store it as the lock's value
/// and compare it atomically on release and extend.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; 16]);

impl Token {
    /// Draws a new token from the OS (`getrandom`).
    ///
    /// # Errors
    ///
    /// [`Error::Random`] if the OS random source fails, which on supported platforms means the
    /// system is badly broken; a predictable token would be worse than no lock.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| Error::Random(Box::new(e)))?;
        Ok(Token(bytes))
    }

    /// Builds a token from raw bytes, for backends that read one back from a server.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Token(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The token as 32 lowercase hex digits, the form backends store on servers.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(32);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a capability (whoever knows it can release the lock), so debug output
        // shows only enough to tell tokens apart.
        write!(f, "Token({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hex_encoded() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        let hex = a.to_hex();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(Token::from_bytes(*a.as_bytes()), a);
    }

    #[test]
    fn debug_shows_a_prefix_only() {
        let t = Token::from_bytes([0xab; 16]);
        assert_eq!(format!("{t:?}"), "Token(abababab…)");
    }
}
