//! Puts the backends enabled by this crate's features into [`Registry::global`], so that
//! `Locks::connect("redis://...")` and `Lock::new(..)` with `PYLOCK_URL` set just work.

use std::sync::Once;

use pylock_core::Registry;

/// Installs every backend that this crate's features enable into [`Registry::global`].
///
/// Runs by itself when the program loads (feature `auto-install`, on by default), so
/// applications never need to call it. Call it where load-time constructors do not run (for
/// example when pylock is linked into a C program as a static library), or with
/// `auto-install` off, before `Lock::new` or `Locks::connect` (`pylock::connect` and
/// `pylock::from_env` call it themselves). Calling it again does nothing.
pub fn install_default_backends() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| install_in(Registry::global()));
}

/// Installs every backend that this crate's features enable into `registry`.
pub fn install_in(registry: &Registry) {
    // The same call for every backend; memory:// is in every registry from the start, and
    // installing it again keeps it so.
    registry.install(pylock_core::memory::BACKENDS);
    #[cfg(feature = "open")]
    registry.install(pylock_open::BACKENDS);
    #[cfg(feature = "redis")]
    registry.install(pylock_redis::BACKENDS);
    #[cfg(feature = "memcache")]
    registry.install(pylock_memcache::BACKENDS);
    #[cfg(feature = "etcd")]
    registry.install(pylock_etcd::BACKENDS);
}

// The one unsafe item of the workspace. A load-time constructor is the only way a facade can
// install its backends with no call from the user ("without ceremony"), as opendal's facade
// does. It is sound here because the body only takes a `Once` and fills a `RwLock`ed map:
// it needs no thread-local state, no allocator set up by main, and no runtime.
#[cfg(feature = "auto-install")]
#[allow(unsafe_code)]
#[ctor::ctor(unsafe)]
fn install_at_load() {
    install_default_backends();
}
