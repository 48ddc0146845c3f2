//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` in DATABASE_URL say (rustls, ring).
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` only and refuses other parameters, so
//! the URL's libpq TLS parameters are taken out here and turned into a rustls configuration:
//!
//! | `sslmode`      | encrypted | server certificate checked                      |
//! |----------------|-----------|-------------------------------------------------|
//! | (none)         | no        | — (the URL asks for nothing: plaintext, as before) |
//! | `disable`      | no        | —                                               |
//! | `prefer`       | if offered | no                                             |
//! | `require`      | yes       | no (with `sslrootcert`: the chain, as libpq)    |
//! | `verify-ca`    | yes       | chain to `sslrootcert`                          |
//! | `verify-full`  | yes       | chain to `sslrootcert` (`system`: the system's roots) and the host name |
//!
//! Unlike libpq, a URL without `sslmode` stays plaintext rather than trying TLS first: an
//! explicit setting is the only way to get TLS, so that nothing changes for URLs written
//! before, and no server answers an unexpected TLS request.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use crate::adapters::tls::{ServerCheck, client_config};

/// What DATABASE_URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    /// The URL for tokio-postgres: the libpq-only parameters removed, `sslmode` one it knows.
    pub url: String,
    /// How the server's certificate is checked when TLS is used; None: no TLS.
    pub check: Option<ServerCheck>,
}

/// Splits DATABASE_URL's TLS parameters out of it. Key-value connection strings
/// (`host=... sslmode=require`) go to tokio-postgres unchanged.
pub fn parse(url: &str) -> Result<PgTls, String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !is_url {
        // A key-value string: tokio-postgres reads its sslmode; TLS without checking the
        // certificate when it asks for TLS at all.
        let asks = ["sslmode=require", "sslmode=prefer"]
            .iter()
            .any(|m| url.split_whitespace().any(|w| w == *m));
        return Ok(PgTls {
            url: url.to_string(),
            check: asks.then_some(ServerCheck::EncryptOnly),
        });
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok(PgTls {
            url: url.to_string(),
            check: None,
        });
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode_str(value).decode_utf8_lossy().to_string();
        match key {
            "sslmode" => mode = Some(decoded),
            "sslrootcert" => root_cert = Some(decoded),
            _ => kept.push(pair),
        }
    }
    let file = |what: &str| -> Result<PathBuf, String> {
        match root_cert.as_deref() {
            Some("system") | None => Err(format!(
                "DATABASE_URL: sslmode={what} needs sslrootcert=<CA file in PEM>"
            )),
            Some(path) => Ok(PathBuf::from(path)),
        }
    };
    let (pg_mode, check) = match mode.as_deref() {
        None if root_cert.is_some() => {
            return Err(
                "DATABASE_URL: sslrootcert is given without sslmode; say sslmode=verify-full \
                 (or verify-ca, require)"
                    .into(),
            );
        }
        None => (None, None),
        Some("disable") => (Some("disable"), None),
        Some("prefer") => (Some("prefer"), Some(ServerCheck::EncryptOnly)),
        Some("require") => match root_cert.as_deref() {
            None => (Some("require"), Some(ServerCheck::EncryptOnly)),
            Some(_) => (Some("require"), Some(ServerCheck::Chain(file("require")?))),
        },
        Some("verify-ca") => (
            Some("require"),
            Some(ServerCheck::Chain(file("verify-ca")?)),
        ),
        Some("verify-full") => {
            let roots = match root_cert.as_deref() {
                Some("system") => None,
                _ => Some(file("verify-full")?),
            };
            (Some("require"), Some(ServerCheck::ChainAndName(roots)))
        }
        Some(other) => {
            return Err(format!(
                "DATABASE_URL: sslmode={other} is not one of disable, prefer, require, verify-ca, \
                 verify-full"
            ));
        }
    };
    let mut params: Vec<String> = kept.into_iter().map(str::to_string).collect();
    if let Some(m) = pg_mode {
        params.push(format!("sslmode={m}"));
    }
    let url = if params.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", params.join("&"))
    };
    Ok(PgTls { url, check })
}

/// The connector for a pool: rustls as `check` says (never used when the URL asks no TLS).
pub fn connector(
    check: Option<&ServerCheck>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let config = client_config(
        check.unwrap_or(&ServerCheck::EncryptOnly),
        "DATABASE_URL sslrootcert",
    )?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_become_a_check_and_a_url_tokio_postgres_takes() {
        let p = |u: &str| parse(u).unwrap();
        let plain = p("postgres://u@h/db?application_name=x");
        assert_eq!(plain.url, "postgres://u@h/db?application_name=x");
        assert_eq!(plain.check, None);
        assert_eq!(p("postgres://u@h/db").check, None);
        let require = p("postgres://u@h/db?sslmode=require");
        assert_eq!(require.url, "postgres://u@h/db?sslmode=require");
        assert_eq!(require.check, Some(ServerCheck::EncryptOnly));
        let full = p(
            "postgresql://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(
            full.url,
            "postgresql://u@h/db?connect_timeout=3&sslmode=require"
        );
        assert_eq!(
            full.check,
            Some(ServerCheck::ChainAndName(Some("/etc/ca.pem".into())))
        );
        assert_eq!(
            p("postgres://h/db?sslmode=verify-full&sslrootcert=system").check,
            Some(ServerCheck::ChainAndName(None))
        );
        assert_eq!(
            p("postgres://h/db?sslmode=verify-ca&sslrootcert=ca.pem").check,
            Some(ServerCheck::Chain("ca.pem".into()))
        );
        assert_eq!(p("postgres://h/db?sslmode=disable").check, None);
        // Key-value strings pass through.
        assert_eq!(p("host=h sslmode=require").url, "host=h sslmode=require");
        assert_eq!(
            p("host=h sslmode=require").check,
            Some(ServerCheck::EncryptOnly)
        );
        assert_eq!(p("host=h").check, None);
    }

    #[test]
    fn unclear_tls_settings_are_refused() {
        for bad in [
            "postgres://h/db?sslmode=verify-ca",
            "postgres://h/db?sslmode=verify-full",
            "postgres://h/db?sslmode=verify-ca&sslrootcert=system",
            "postgres://h/db?sslrootcert=ca.pem",
            "postgres://h/db?sslmode=allow-all",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
