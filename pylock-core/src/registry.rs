//! URL scheme -> backend factory.
//!
//! The process-wide [`Registry::global`] starts with `memory://`; backend crates add their
//! schemes with their `register` function (the `pylock` facade does this for the backends its
//! features enable), and third parties call [`Registry::register`] for their own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::memory;
use crate::url::{redact_url, scheme_of};

/// Builds a backend from a full connection URL. Factories parse the URL and may defer
/// connecting to the first operation, so they are cheap and synchronous.
pub type Factory = Arc<dyn Fn(&str) -> Result<Arc<dyn LockBackend>> + Send + Sync>;

/// A table of URL schemes and the factories that build their backends.
#[derive(Default)]
pub struct Registry {
    factories: RwLock<BTreeMap<String, Factory>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the core's own backend, `memory://`.
    pub fn with_builtins() -> Self {
        let registry = Self::new();
        memory::register_in(&registry);
        registry
    }

    /// The process-wide registry used by [`Locks::connect`](crate::Locks::connect) and
    /// [`Lock::new`](crate::Lock::new). It starts with the built-ins.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::with_builtins)
    }

    /// Registers `factory` for `scheme` (case-insensitive), replacing any earlier one.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pylock_core::{LockBackend, MemoryBackend, Registry};
    ///
    /// let registry = Registry::new();
    /// registry.register("mine", |_url: &str| {
    ///     Ok(Arc::new(MemoryBackend::new()) as Arc<dyn LockBackend>)
    /// });
    /// assert!(registry.connect("mine://anything").is_ok());
    /// ```
    pub fn register<F>(&self, scheme: &str, factory: F)
    where
        F: Fn(&str) -> Result<Arc<dyn LockBackend>> + Send + Sync + 'static,
    {
        self.factories
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(scheme.to_ascii_lowercase(), Arc::new(factory));
    }

    /// Whether `scheme` has a factory.
    pub fn contains(&self, scheme: &str) -> bool {
        self.factories
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&scheme.to_ascii_lowercase())
    }

    /// The registered schemes, sorted.
    pub fn schemes(&self) -> Vec<String> {
        self.factories
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Builds the backend for `url` with the factory of its scheme.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] when `url` has no valid `scheme://`, [`Error::UnknownScheme`]
    /// (naming the registered schemes) when no factory has it, and whatever the factory
    /// returns for a URL it cannot use.
    pub fn connect(&self, url: &str) -> Result<Arc<dyn LockBackend>> {
        let scheme = scheme_of(url).map_err(|reason| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        })?;
        // Clone the factory out so that a factory may itself use the registry.
        let factory = self
            .factories
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&scheme)
            .cloned();
        match factory {
            Some(factory) => factory(url),
            None => Err(Error::UnknownScheme {
                scheme,
                available: self.schemes(),
            }),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("schemes", &self.schemes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_lists_what_is_registered() {
        let registry = Registry::with_builtins();
        match registry.connect("zookeeper://localhost") {
            Err(Error::UnknownScheme { scheme, available }) => {
                assert_eq!(scheme, "zookeeper");
                assert_eq!(available, vec!["memory".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_urls_are_refused_before_lookup() {
        let registry = Registry::with_builtins();
        for bad in ["memory", "", "mem ory://", "://"] {
            assert!(
                matches!(registry.connect(bad), Err(Error::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn schemes_are_case_insensitive_and_replaceable() {
        let registry = Registry::new();
        registry.register("Mem", |url: &str| memory::open(url));
        assert!(registry.contains("mem"));
        assert!(registry.connect("MEM://").is_ok());
        assert_eq!(registry.schemes(), vec!["mem".to_owned()]);
    }

    #[test]
    fn global_has_memory() {
        assert!(Registry::global().contains("memory"));
        assert!(Registry::global().connect("memory://").is_ok());
    }
}
