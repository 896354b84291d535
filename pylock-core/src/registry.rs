//! URL scheme -> backend factory.
//!
//! Each backend crate describes itself with [`BackendDescriptor`] constants (its schemes and
//! the function that opens one from a URL), exported as `BACKENDS`, and a registry installs
//! them with [`Registry::install`], the one call for every backend, the core's `memory://`
//! included. The process-wide [`Registry::global`] starts with the core's built-in backends;
//! the `pylock` facade installs those its features enable; a third party installs its own, or
//! registers a single factory with [`Registry::register`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::url::{redact_url, scheme_of};

/// Builds a backend from a full connection URL. Factories parse the URL and may defer
/// connecting to the first operation, so they are cheap and synchronous.
pub type Factory = Arc<dyn Fn(&str) -> Result<Arc<dyn LockBackend>> + Send + Sync>;

/// A backend as a registry knows it: its name, the URL schemes it serves, and the function
/// that builds it from a full URL of one of them.
///
/// ```
/// use std::sync::Arc;
/// use pylock_core::raw::{BackendDescriptor, LockBackend};
/// use pylock_core::{MemoryBackend, Registry, Result};
///
/// fn open(_url: &str) -> Result<Arc<dyn LockBackend>> {
///     Ok(Arc::new(MemoryBackend::new()))
/// }
///
/// /// What `my-backend` gives its users to install.
/// pub const BACKENDS: &[BackendDescriptor] =
///     &[BackendDescriptor { name: "mine", schemes: &["mine", "mines"], open }];
///
/// let registry = Registry::new();
/// registry.install(BACKENDS);
/// assert_eq!(registry.schemes(), ["mine", "mines"]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BackendDescriptor {
    /// The backend's name, as [`LockBackend::name`] gives it.
    pub name: &'static str,
    /// The URL schemes it serves, lowercase.
    pub schemes: &'static [&'static str],
    /// Builds the backend from a full URL of one of `schemes`: parses it (cheap, synchronous;
    /// connecting waits for the first operation) and refuses what it cannot use.
    pub open: fn(&str) -> Result<Arc<dyn LockBackend>>,
}

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

    /// A registry holding the core's built-in backends (`memory://`).
    pub fn with_builtins() -> Self {
        let registry = Self::new();
        registry.install(crate::BUILT_IN);
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

    /// Registers every scheme of each of `backends`, replacing earlier factories of the same
    /// schemes.
    pub fn install(&self, backends: &[BackendDescriptor]) {
        for backend in backends {
            for scheme in backend.schemes {
                self.register(scheme, backend.open);
            }
        }
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
        registry.register("Mem", |url: &str| crate::memory::open(url));
        assert!(registry.contains("mem"));
        assert!(registry.connect("MEM://").is_ok());
        assert_eq!(registry.schemes(), vec!["mem".to_owned()]);
    }

    #[test]
    fn install_registers_every_scheme_of_every_descriptor() {
        fn refuse(url: &str) -> Result<Arc<dyn LockBackend>> {
            Err(Error::InvalidUrl {
                url: url.to_owned(),
                reason: "this one refuses".to_owned(),
            })
        }
        let registry = Registry::new();
        registry.install(&[
            BackendDescriptor {
                name: "a",
                schemes: &["a", "a+tls"],
                open: crate::memory::open,
            },
            BackendDescriptor {
                name: "b",
                schemes: &["b"],
                open: refuse,
            },
        ]);
        assert_eq!(registry.schemes(), ["a", "a+tls", "b"]);
        assert!(registry.connect("a+tls://").is_ok());
        assert!(matches!(
            registry.connect("b://"),
            Err(Error::InvalidUrl { .. })
        ));
        // Installing again replaces, as register does: the last descriptor of a scheme wins.
        registry.install(&[BackendDescriptor {
            name: "b2",
            schemes: &["b"],
            open: crate::memory::open,
        }]);
        assert!(registry.connect("b://").is_ok());
    }

    #[test]
    fn global_has_memory() {
        assert!(Registry::global().contains("memory"));
        assert!(Registry::global().connect("memory://").is_ok());
    }
}
