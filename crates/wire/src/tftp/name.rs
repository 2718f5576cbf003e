//! File names as TFTP servers resolve them against their root, so that
//! every name that reaches the same file is one key (issue 13: "x", "/x"
//! and "./x" were three cache entries and three fetches).

/// Why a requested file name names no file under a server's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing left once separators and `.` are dropped.
    #[error("empty file name")]
    Empty,
    /// A `..` component: above the root.
    #[error("file name escapes the root")]
    Escapes,
    /// A NUL byte (or, where a protocol limits it, too long).
    #[error("invalid file name")]
    Invalid,
}

/// Normalises a file name the way TFTP servers resolve it against their
/// root: backslashes become slashes (dnsmasq does this for Windows
/// clients), leading slashes are dropped (tftpd-hpa `-s` and dnsmasq serve
/// "/f" and "f" as the same file), empty and `.` components vanish, `..` is
/// refused. Case is kept: the servers' file systems are case-sensitive.
///
/// ```
/// use wire::tftp::{normalize_name, NameError};
/// assert_eq!(normalize_name("/boot/./x").unwrap(), "boot/x");
/// assert_eq!(normalize_name("a/../../etc/passwd"), Err(NameError::Escapes));
/// ```
pub fn normalize_name(name: &str) -> Result<String, NameError> {
    if name.contains('\0') {
        return Err(NameError::Invalid);
    }
    let mut parts = Vec::new();
    for c in name.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => return Err(NameError::Escapes),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(NameError::Empty);
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_spellings_of_one_file_are_one_name() {
        for n in ["x", "/x", "./x", "//x", "\\x", "/./x/", "x/."] {
            assert_eq!(normalize_name(n).unwrap(), "x", "{n:?}");
        }
        assert_eq!(normalize_name("//boot/./x").unwrap(), "boot/x");
        assert_eq!(normalize_name("\\boot\\bcd").unwrap(), "boot/bcd");
        assert_eq!(normalize_name("a..b").unwrap(), "a..b");
        assert_eq!(normalize_name("..").unwrap_err(), NameError::Escapes);
        assert_eq!(normalize_name("/").unwrap_err(), NameError::Empty);
        assert_eq!(normalize_name("a\0b").unwrap_err(), NameError::Invalid);
    }

    proptest! {
        /// Normalising is idempotent, and a normal name has no empty, `.`
        /// or `..` component and no backslash.
        #[test]
        fn normal_names_are_fixed_points(name in "[a-z./\\\\]{0,12}") {
            if let Ok(n) = normalize_name(&name) {
                prop_assert_eq!(normalize_name(&n), Ok(n.clone()));
                prop_assert!(!n.contains('\\'));
                prop_assert!(n.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
            }
        }
    }
}
