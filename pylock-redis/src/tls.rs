//! TLS: the crypto provider, chosen here rather than left to chance, and what a certificate
//! error means to a caller.

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

/// Whether `error` (or one of its sources) says the TLS handshake failed on a certificate:
/// retrying cannot fix that, the URL's `ca_file` (or the server's certificate) must change.
pub(crate) fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        #[cfg(feature = "tls")]
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(
                        rustls::AlertDescription::BadCertificate
                            | rustls::AlertDescription::UnknownCA
                            | rustls::AlertDescription::CertificateRequired
                            | rustls::AlertDescription::CertificateUnknown
                    )
            );
        }
        let text = error.to_string();
        if text.contains("invalid peer certificate") || text.contains("CertificateRequired") {
            return true;
        }
        source = error.source();
    }
    false
}
