//! Name and label syntax as Kubernetes defines it (apimachinery's `validation` package).
//! Each check returns the reason a value is refused, or `None`.

/// Longest DNS-1123 subdomain.
pub const SUBDOMAIN_MAX: usize = 253;
/// Longest DNS-1123 label (and label value, and IANA service name is 15).
pub const LABEL_MAX: usize = 63;

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric.
pub fn dns1123_label(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > LABEL_MAX {
        return Some(format!("must be no more than {LABEL_MAX} characters"));
    }
    let ok = s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    (!ok).then(|| {
        format!(
            "{s:?} is not a valid DNS-1123 label: it must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
        )
    })
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter (Service names).
pub fn dns1035_label(s: &str) -> Option<String> {
    if let Some(e) = dns1123_label(s) {
        return Some(e.replace("DNS-1123", "DNS-1035"));
    }
    (!s.starts_with(|c: char| c.is_ascii_lowercase())).then(|| {
        format!("{s:?} is not a valid DNS-1035 label: it must start with a lower case letter (e.g. 'my-name', or 'abc-123')")
    })
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > SUBDOMAIN_MAX {
        return Some(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    let ok = s.split('.').all(|part| {
        !part.is_empty()
            && part.chars().all(|c| is_alnum_lower(c) || c == '-')
            && part.starts_with(is_alnum_lower)
            && part.ends_with(is_alnum_lower)
    });
    (!ok).then(|| {
        format!(
            "{s:?} is not a valid DNS-1123 subdomain: it must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
        )
    })
}

fn qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label or annotation key: an optional DNS subdomain prefix and '/', then a name of at
/// most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
pub fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if let Some(e) = dns1123_subdomain(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    (!qualified_name_part(name)).then(|| {
        format!(
            "{s:?} is not a valid name: it must be 63 characters or less, consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )
    })
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' or '.', starting and ending
/// alphanumeric.
pub fn label_value(s: &str) -> Option<String> {
    (!s.is_empty() && !qualified_name_part(s)).then(|| {
        format!(
            "{s:?} is not a valid label value: it must be 63 characters or less, empty or consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character"
        )
    })
}

/// An IANA service name (a named port): at most 15 lowercase alphanumerics or '-', with at
/// least one letter, no leading, trailing or double '-'.
pub fn iana_svc_name(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    (!ok).then(|| {
        format!("{s:?} is not a valid port name: it must be 15 characters or less, lower case alphanumerics or '-' with at least one letter, and no leading, trailing or double '-'")
    })
}

/// A ConfigMap or Secret key: alphanumerics, '-', '_' or '.'.
pub fn config_map_key(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= SUBDOMAIN_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
        && !s.starts_with("..");
    (!ok).then(|| {
        format!(
            "{s:?} is not a valid key: it must consist of alphanumeric characters, '-', '_' or '.'"
        )
    })
}

/// An environment variable name: printable ASCII without '='.
pub fn env_var_name(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '=');
    (!ok).then(|| format!("{s:?} is not a valid environment variable name: it must consist of printable characters other than '='"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(dns1123_subdomain("web-1.example").is_none());
        assert!(dns1123_subdomain("Web").is_some());
        assert!(dns1123_subdomain("-web").is_some());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_some());
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1035_label("1abc").is_some());
        assert!(dns1035_label("abc-1").is_none());
        assert!(qualified_name("app.kubernetes.io/name").is_none());
        assert!(qualified_name("app").is_none());
        assert!(qualified_name("-app").is_some());
        assert!(qualified_name("Bad Prefix/app").is_some());
        assert!(label_value("").is_none());
        assert!(label_value("v1.2_x").is_none());
        assert!(label_value("no spaces").is_some());
        assert!(iana_svc_name("http").is_none());
        assert!(iana_svc_name("8080").is_some());
        assert!(iana_svc_name("a--b").is_some());
        assert!(config_map_key("app.properties").is_none());
        assert!(config_map_key("a/b").is_some());
    }
}
