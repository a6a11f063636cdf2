//! The Debian mirror environments are built from: `PYRO_DEBIAN_MIRROR`, else the Debian archive the
//! host's apt already uses, else deb.debian.org.

use std::path::Path;

pub const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

pub fn debian_mirror() -> String {
    if let Ok(mirror) = std::env::var("PYRO_DEBIAN_MIRROR") {
        if !mirror.trim().is_empty() {
            return mirror.trim().to_string();
        }
    }
    from_apt_sources(Path::new("/etc/apt")).unwrap_or_else(|| FALLBACK_MIRROR.to_string())
}

fn from_apt_sources(apt_dir: &Path) -> Option<String> {
    let mut files: Vec<_> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sources"))
    {
        if let Some(uri) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| parse_deb822(&text))
        {
            return Some(uri);
        }
    }
    let legacy = std::fs::read_to_string(apt_dir.join("sources.list")).ok()?;
    parse_one_line(&legacy)
}

/// A Debian archive URI (not the security archive, not another distribution's).
fn is_debian_archive(uri: &str) -> bool {
    let uri = uri.trim_end_matches('/');
    (uri.starts_with("http://") || uri.starts_with("https://")) && uri.ends_with("/debian")
}

fn parse_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            continue;
        }
        if !field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        if let Some(uri) = field("URIs").and_then(|uris| {
            uris.split_whitespace()
                .find(|u| is_debian_archive(u))
                .map(str::to_string)
        }) {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

fn parse_one_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("deb "))
        .flat_map(|l| l.split_whitespace().skip(1))
        .find(|word| is_debian_archive(word))
        .map(|uri| uri.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_the_main_archive() {
        let text = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n\
                    Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(
            parse_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn one_line_format() {
        let text = "# comment\ndeb [arch=amd64] http://ftp.example.org/debian bookworm main\n";
        assert_eq!(
            parse_one_line(text).as_deref(),
            Some("http://ftp.example.org/debian")
        );
    }

    #[test]
    fn other_distributions_are_ignored() {
        assert_eq!(
            parse_one_line("deb http://archive.ubuntu.com/ubuntu noble main\n"),
            None
        );
    }
}
