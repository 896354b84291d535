//! The load-time installer is a feature (`auto-install`, on by default). Without it nothing is
//! registered until the program asks; with it, everything enabled is there from the start.
//! `scripts/test.sh` runs this file both ways.

use pylock::Registry;

#[cfg(feature = "redis")]
const ENABLED: &str = "redis";
#[cfg(not(feature = "redis"))]
const ENABLED: &str = "memory";

fn registered() -> bool {
    Registry::global().schemes().iter().any(|s| s == ENABLED)
}

#[cfg(not(feature = "auto-install"))]
#[test]
fn nothing_is_installed_until_asked() {
    if ENABLED != "memory" {
        assert!(
            !registered(),
            "{ENABLED}:// was installed without being asked"
        );
        assert!(matches!(
            pylock::Locks::connect(&format!("{ENABLED}://127.0.0.1:1")),
            Err(pylock::Error::UnknownScheme { .. })
        ));
    }
    pylock::install_default_backends();
    assert!(
        registered(),
        "{ENABLED}:// after install_default_backends()"
    );
}

#[cfg(feature = "auto-install")]
#[test]
fn everything_enabled_is_installed_at_load() {
    assert!(registered(), "{ENABLED}:// was not installed at load");
}
