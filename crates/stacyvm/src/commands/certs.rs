//! `stacyvm worker certs --out DIR [--hosts H,...] [--days N] [--force]`: a throwaway CA plus a
//! worker (server) and a control-plane (client) certificate for `worker.rpc_tls`, so nobody needs
//! openssl incantations. All are X.509 v3 with the extensions rustls checks (basic constraints,
//! key usage, extended key usage, subject alt names), ECDSA P-256 keys (rcgen with ring, the
//! provider rustls uses here). See docs/worker.md, "Certificates".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{Datelike, Duration, Utc};
use clap::Args;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key, client.pem, client.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// Names and IP addresses the worker is reached at (its `rpc_url` host); comma-separated or
    /// repeated.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
    /// Validity in days, from yesterday (clock skew).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Replace existing files in DIR.
    #[arg(long)]
    pub force: bool,
}

const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

fn validity(params: &mut CertificateParams, days: u32) {
    let ymd =
        |d: chrono::DateTime<Utc>| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let now = Utc::now();
    params.not_before = ymd(now - Duration::days(1));
    params.not_after = ymd(now + Duration::days(i64::from(days)));
}

fn leaf(
    hosts: Vec<String>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
    days: u32,
    ca: &(Certificate, KeyPair),
) -> anyhow::Result<(Certificate, KeyPair)> {
    let key = KeyPair::generate().context("generating a key")?;
    let mut params = CertificateParams::new(hosts).context("invalid --hosts")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let cert = params
        .signed_by(&key, &ca.0, &ca.1)
        .with_context(|| format!("signing the {name} certificate"))?;
    Ok((cert, key))
}

/// Writes `contents`; keys are readable by the owner only.
fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> anyhow::Result<()> {
    let path = dir.join(name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let hosts: Vec<String> = args
        .hosts
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        bail!("--hosts: give at least one name or IP address the worker is reached at");
    }
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if !args.force {
        if let Some(f) = FILES.iter().find(|f| args.out.join(f).exists()) {
            bail!(
                "{} exists; use --force to replace the set",
                args.out.join(f).display()
            );
        }
    }

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "StacyVM worker RPC CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params, args.days);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;
    let ca = (ca_cert, ca_key);
    let first = hosts[0].clone();
    let server = leaf(
        hosts.clone(),
        &first,
        ExtendedKeyUsagePurpose::ServerAuth,
        args.days,
        &ca,
    )?;
    let client = leaf(
        Vec::new(),
        "stacyvm-control-plane",
        ExtendedKeyUsagePurpose::ClientAuth,
        args.days,
        &ca,
    )?;

    let dir = &args.out;
    write(dir, "ca.pem", &ca.0.pem(), false)?;
    write(dir, "ca.key", &ca.1.serialize_pem(), true)?;
    write(dir, "server.pem", &server.0.pem(), false)?;
    write(dir, "server.key", &server.1.serialize_pem(), true)?;
    write(dir, "client.pem", &client.0.pem(), false)?;
    write(dir, "client.key", &client.1.serialize_pem(), true)?;

    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let p = |f: &str| abs.join(f).display().to_string();
    println!(
        "wrote {} (server names: {}; valid {} days)\n\n\
         # worker config (stacyvm worker):\nworker:\n  rpc_tls:\n    enabled: true\n    \
         server_cert_file: {}\n    server_key_file: {}\n    client_ca_file: {}\n\n\
         # control plane config (stacyvm serve):\nworker:\n  rpc_tls:\n    enabled: true\n    \
         ca_file: {}\n    client_cert_file: {}\n    client_key_file: {}\n\n\
         Keep ca.key offline (it can issue more certificates); copy server.* to the worker and \
         client.* to the control plane.",
        abs.display(),
        hosts.join(", "),
        args.days,
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        p("ca.pem"),
        p("client.pem"),
        p("client.key"),
    );
    Ok(ExitCode::SUCCESS)
}
