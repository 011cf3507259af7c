//! Small format checks for string-typed keys: CORS origins, URLs, `host:port`, Docker memory.
//! Each returns a reason; the caller attaches the key.

fn check_port(port: &str) -> Result<u16, String> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("port {port} is outside 0..65535"))
}

fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{host:?} is not an IPv6 address")),
        };
    }
    if host.is_empty() {
        return Err("host is empty".into());
    }
    if host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!("{host:?} is not a valid host name"))
    }
}

/// Splits `host[:port]` (IPv6 in brackets). The port is `None` when absent.
fn split_authority(auth: &str) -> Result<(&str, Option<&str>), String> {
    if auth.starts_with('[') {
        let end = auth.find(']').ok_or("unclosed '[' in host")?;
        let (host, rest) = auth.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {rest:?} after host")),
            },
        };
    }
    match auth.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((auth, None)),
    }
}

fn strip_scheme(s: &str) -> Option<&str> {
    s.strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
}

/// A bare browser origin: `http(s)://host[:port]`, nothing after it (not even `/`).
pub(crate) fn check_origin(origin: &str) -> Result<(), String> {
    const HINT: &str = "must be \"*\" or an origin like https://app.example.com[:port]";
    let rest = strip_scheme(origin).ok_or_else(|| format!("{origin:?} {HINT}"))?;
    if rest
        .chars()
        .any(|c| matches!(c, '/' | '?' | '#' | '@' | '*') || c.is_whitespace())
    {
        return Err(format!(
            "{origin:?} {HINT} (no path, trailing slash, query, wildcard or credentials)"
        ));
    }
    check_authority(origin, rest)
}

/// An `http(s)://host[:port][/path]` URL.
pub(crate) fn check_http_url(url: &str) -> Result<(), String> {
    let rest =
        strip_scheme(url).ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let auth = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if auth.contains('@') {
        return Err(format!("{url:?} must not carry credentials"));
    }
    check_authority(url, auth)
}

/// `host[:port]` of the value `whole`, which a refusal quotes.
fn check_authority(whole: &str, auth: &str) -> Result<(), String> {
    let (host, port) = split_authority(auth).map_err(|r| format!("{whole:?}: {r}"))?;
    check_host(host).map_err(|r| format!("{whole:?}: {r}"))?;
    if let Some(port) = port {
        check_port(port).map_err(|r| format!("{whole:?}: {r}"))?;
    }
    Ok(())
}

/// A listen address `host:port` or `:port` (no scheme).
pub(crate) fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.contains("://") {
        return Err(format!(
            "{addr:?} must be host:port without a scheme (the scheme is added when advertised)"
        ));
    }
    let (host, port) = split_authority(addr).map_err(|r| format!("{addr:?}: {r}"))?;
    let port = port.ok_or_else(|| format!("{addr:?} has no :port"))?;
    if !host.is_empty() {
        check_host(host).map_err(|r| format!("{addr:?}: {r}"))?;
    }
    check_port(port).map_err(|r| format!("{addr:?}: {r}"))?;
    Ok(())
}

/// Docker's memory syntax (`units.RAMInBytes`): a number, optional space, optional unit
/// `k|m|g|t|p` (binary multiples), optional `i` and `b`; `512m`, `1g`, `1.5GiB`, `1048576`.
/// Empty = no limit (`None`).
pub(crate) fn parse_docker_memory(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("{s:?} is not a memory size like 512m or 1g");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mut unit = unit.trim_start().to_ascii_lowercase();
    if unit.ends_with('b') {
        unit.pop();
    }
    if unit.len() == 2 && unit.ends_with('i') {
        unit.pop();
    }
    let mult: f64 = match unit.as_str() {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0_f64.powi(4),
        "p" => 1024.0_f64.powi(5),
        _ => return Err(bad()),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    // Finite, non-negative (digits only) and range-checked above.
    Ok(Some(bytes as u64))
}
