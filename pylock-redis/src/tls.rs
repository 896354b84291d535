//! TLS: the crypto provider, chosen here rather than left to chance. (What a certificate
//! error means to a caller is `pylock_core::raw::is_certificate_error`, shared with etcd.)

/// Makes ring rustls's process-wide crypto provider, unless the program chose one already.
/// rustls 0.23 panics at the first handshake when no provider is installed and none can be
/// picked from its features, which is what `rediss://` did before.
pub(crate) fn install_crypto_provider() {
    #[cfg(feature = "tls")]
    {
        // An Err means a provider is already installed: the program's choice stands.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
