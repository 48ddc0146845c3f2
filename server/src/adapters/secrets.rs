//! Masking secrets in connection strings, for logs and error messages. It sits with the
//! adapters, whose errors quote the URLs they could not use; the configuration and the wiring,
//! which come after the adapters in the layering, use the same masking.

/// Replaces every secret in a connection string with `***`, for logs: the password (or NATS
/// token) in a URL's userinfo, password-like query parameters (`?password=`,
/// `sentinelPassword=`, `token=`), the same keys in a libpq key=value DSN
/// (`host=h password='s e'`), and each URL of a comma-separated list (NATS takes several).
/// When in doubt it masks too much rather than too little: a log line must never carry a secret.
pub fn mask_secrets(raw: &str) -> String {
    if !raw.contains("://") {
        return mask_dsn(raw);
    }
    // A list of URLs: split before each `,scheme://`. A comma inside a password stays with its
    // URL, because what follows it has no `://` of its own.
    let mut urls: Vec<String> = Vec::new();
    for piece in raw.split(',') {
        match urls.last_mut() {
            Some(last) if !piece.contains("://") => {
                last.push(',');
                last.push_str(piece);
            }
            _ => urls.push(piece.to_string()),
        }
    }
    urls.iter()
        .map(|u| mask_url(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// `text` (an error message about `raw`) with `raw` masked and every URL password or token of
/// `raw` replaced by `***`: a library's error may quote the URL it could not use.
pub fn redact(text: &str, raw: &str) -> String {
    let mut out = text.replace(raw, &mask_secrets(raw));
    for piece in raw.split(',') {
        let Some((_, rest)) = piece.split_once("://") else {
            continue;
        };
        let Some((userinfo, _)) = rest.rsplit_once('@') else {
            continue;
        };
        let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
        if secret.len() >= 3 {
            out = out.replace(secret, "***");
        }
    }
    out
}

/// Whether a parameter named `key` holds a secret.
fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    [
        "pass",
        "token",
        "secret",
        "auth",
        "nkey",
        "jwt",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return mask_dsn(url);
    };
    // The userinfo ends at the LAST `@`: a password may hold `@`, `/` or `?` unencoded.
    let (userinfo, host_and_more) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let userinfo = userinfo.map(|u| match u.split_once(':') {
        Some((user, _)) => format!("{user}:***@"),
        // A bare NATS userinfo is a token; elsewhere it is a user name.
        None if scheme.starts_with("nats")
            || scheme.starts_with("tls")
            || scheme.starts_with("ws") =>
        {
            "***@".to_string()
        }
        None => format!("{u}@"),
    });
    let host_and_more = match host_and_more.split_once('?') {
        Some((path, query)) => {
            let query = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}?{query}")
        }
        None => host_and_more.to_string(),
    };
    format!("{scheme}://{}{host_and_more}", userinfo.unwrap_or_default())
}

/// Masks a libpq key=value connection string: `key = value` pairs separated by spaces, a value
/// either bare or single-quoted with backslash escapes.
fn mask_dsn(dsn: &str) -> String {
    let mut out = String::with_capacity(dsn.len());
    let mut chars = dsn.chars().peekable();
    loop {
        // Whitespace between pairs, kept as it is.
        while let Some(c) = chars.peek().copied().filter(|c| c.is_whitespace()) {
            out.push(c);
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let mut key = String::new();
        while let Some(c) = chars
            .peek()
            .copied()
            .filter(|c| *c != '=' && !c.is_whitespace())
        {
            key.push(c);
            chars.next();
        }
        out.push_str(&key);
        while let Some(c) = chars.peek().copied().filter(|c| c.is_whitespace()) {
            out.push(c);
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // Not a pair (a bare word): the next word starts a new one.
            continue;
        }
        out.push('=');
        chars.next();
        while let Some(c) = chars.peek().copied().filter(|c| c.is_whitespace()) {
            out.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            while let Some(c) = chars.next() {
                value.push(c);
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| !c.is_whitespace()) {
                value.push(c);
                chars.next();
            }
        }
        if is_secret_key(&key) {
            out.push_str("***");
        } else {
            out.push_str(&value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_secrets("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(mask_secrets("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            mask_secrets("postgres://u:p@ss/w?rd@h1,h2/db?sslmode=require"),
            "postgres://u:***@h1,h2/db?sslmode=require"
        );
        assert_eq!(
            mask_secrets("postgres://u@h/db?password=secret&application_name=x"),
            "postgres://u@h/db?password=***&application_name=x"
        );
        assert_eq!(
            mask_secrets("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            mask_secrets("rediss://default:secret@h:6380"),
            "rediss://default:***@h:6380"
        );
        assert_eq!(
            mask_secrets("redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword=secret"),
            "redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword=***"
        );
        assert_eq!(
            mask_secrets("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn nats_users_tokens_and_lists_are_masked() {
        assert_eq!(
            mask_secrets("nats://u:secret@h:4222"),
            "nats://u:***@h:4222"
        );
        assert_eq!(
            mask_secrets("nats://s3cr3tT0ken@h:4222"),
            "nats://***@h:4222"
        );
        assert_eq!(
            mask_secrets("nats://a:se,cret@h1:4222,tls://tok@h2:4222,nats://h3"),
            "nats://a:***@h1:4222,tls://***@h2:4222,nats://h3"
        );
        assert_eq!(
            mask_secrets("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }

    #[test]
    fn key_value_dsn_passwords_are_masked() {
        assert_eq!(mask_secrets("host=h user=u"), "host=h user=u");
        assert_eq!(
            mask_secrets("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            mask_secrets("host=h password = 'se cr\\'et' dbname=d"),
            "host=h password = *** dbname=d"
        );
        assert_eq!(
            mask_secrets("PASSWORD=secret sslpassword=k"),
            "PASSWORD=*** sslpassword=***"
        );
        for dsn in [
            "password=secret",
            "host=h  password='secret'",
            "password='x\\'secret'",
        ] {
            assert!(!mask_secrets(dsn).contains("secret"), "{dsn}");
        }
    }

    #[test]
    fn errors_quoting_a_url_are_redacted() {
        assert_eq!(
            redact(
                "cannot connect to redis://:hunter2@h:6379 (password hunter2 refused)",
                "redis://:hunter2@h:6379"
            ),
            "cannot connect to redis://:***@h:6379 (password *** refused)"
        );
    }

    #[test]
    fn no_secret_survives_masking() {
        for raw in [
            "postgres://u:secret@h/db",
            "postgres://h/db?password=secret",
            "host=h password=secret",
            "redis://:secret@h",
            "redis://u:secret@h?x=1",
            "nats://secret@h",
            "nats://u:secret@h,nats://v:secret@h2",
            "postgresql://u:sec@ret@h/db",
        ] {
            let masked = mask_secrets(raw);
            assert!(
                !masked.contains("secret") && !masked.contains("ret@h/"),
                "{raw} -> {masked}"
            );
        }
    }
}
