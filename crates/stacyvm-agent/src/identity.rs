//! `identity`: a VM restored from a snapshot shares its template's hostname, machine id and
//! random state with every other clone; the host sends fresh values before anyone uses it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use stacyvm_protocol::agent::{ErrorCode, GuestMsg, Identity, MAX_SEED};
use stacyvm_protocol::base64;

use crate::sys;

fn error(code: ErrorCode, message: String) -> GuestMsg {
    GuestMsg::Error { code, message }
}

/// Validates everything first, then applies the seed (the part that matters most), the clock,
/// the hostname and the machine id, stopping at the first failure.
pub fn apply(id: &Identity, root: &Path) -> GuestMsg {
    let seed = match base64::decode(&id.seed) {
        Some(s) if s.len() <= MAX_SEED => s,
        Some(s) => {
            return error(
                ErrorCode::InvalidInput,
                format!("seed of {} bytes exceeds {MAX_SEED}", s.len()),
            )
        }
        None => return error(ErrorCode::InvalidInput, "seed is not base64".into()),
    };
    if !id.machine_id.is_empty() && !Identity::valid_machine_id(&id.machine_id) {
        return error(ErrorCode::InvalidInput, "invalid machine id".into());
    }
    if id.hostname.len() > 64 {
        return error(
            ErrorCode::InvalidInput,
            "hostname longer than 64 bytes".into(),
        );
    }
    if !seed.is_empty() {
        let r = fs::OpenOptions::new()
            .write(true)
            .open(root.join("dev/urandom"))
            .and_then(|f| sys::add_entropy_and_reseed(&f, &seed));
        if let Err(e) = r {
            return error(ErrorCode::Io, format!("seeding the random generator: {e}"));
        }
    }
    if let Some(ms) = id.unix_time_ms {
        if let Err(e) = sys::set_clock(ms) {
            return error(ErrorCode::Io, format!("setting the clock: {e}"));
        }
    }
    if !id.hostname.is_empty() {
        if let Err(e) = sys::set_hostname(&id.hostname) {
            return error(ErrorCode::Io, format!("setting the hostname: {e}"));
        }
    }
    if !id.machine_id.is_empty() {
        if let Err(e) = write_machine_id(&root.join("etc"), &id.machine_id) {
            return error(ErrorCode::Io, format!("writing /etc/machine-id: {e}"));
        }
    }
    GuestMsg::Ok
}

/// Replaces `<etc>/machine-id` atomically (mode 0444, as systemd leaves it).
fn write_machine_id(etc: &Path, id: &str) -> std::io::Result<()> {
    fs::create_dir_all(etc)?;
    let tmp = etc.join(".machine-id.stacyvm");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(format!("{id}\n").as_bytes())?;
    f.set_permissions(fs::Permissions::from_mode(0o444))?;
    drop(f);
    fs::rename(&tmp, etc.join("machine-id"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_values_before_touching_anything() {
        let dir = tempfile_dir();
        for bad in [
            Identity {
                machine_id: "XYZ".into(),
                hostname: "changed".into(),
                ..Default::default()
            },
            Identity {
                seed: "!!".into(),
                ..Default::default()
            },
            Identity {
                seed: base64::encode(&[1u8; MAX_SEED + 1]),
                ..Default::default()
            },
            Identity {
                hostname: "h".repeat(65),
                ..Default::default()
            },
        ] {
            let r = apply(&bad, &dir);
            assert!(
                matches!(
                    r,
                    GuestMsg::Error {
                        code: ErrorCode::InvalidInput,
                        ..
                    }
                ),
                "{bad:?}: {r:?}"
            );
        }
        assert!(!dir.join("etc").exists());
        // Only a machine id (no global state): written where the sandbox root says.
        let ok = Identity {
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            ..Default::default()
        };
        assert_eq!(apply(&ok, &dir), GuestMsg::Ok);
        let written = fs::read_to_string(dir.join("etc/machine-id")).unwrap();
        assert_eq!(written, "0123456789abcdef0123456789abcdef\n");
        let mode = fs::metadata(dir.join("etc/machine-id"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "stacyvm-agent-identity-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}
