//! The account a process runs as (`ProcStart.user`): looked up in the sandbox's own
//! `/etc/passwd` and `/etc/group` (the agent runs inside the sandbox), not through NSS, so a
//! static agent needs no libc plugins and sees exactly what the image declares.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
    pub home: String,
}

/// Finds `user` (a name, or a numeric uid) in `passwd` and its groups in `group` (the two
/// files' contents). A numeric uid with no entry runs as that uid with the same gid and `/`
/// as home, as `docker exec --user 1234` does; an unknown name is an error.
pub fn lookup(user: &str, passwd: &str, group: &str) -> Result<Account, String> {
    let user = user.trim();
    let numeric = user.parse::<u32>().ok();
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        let uid = f[2].parse::<u32>().ok()?;
        let gid = f[3].parse::<u32>().ok()?;
        let hit = match numeric {
            Some(n) => uid == n,
            None => f[0] == user,
        };
        hit.then(|| (f[0].to_string(), uid, gid, f[5].to_string()))
    });
    let (name, uid, gid, home) = match (entry, numeric) {
        (Some(e), _) => e,
        (None, Some(n)) => (n.to_string(), n, n, "/".to_string()),
        (None, None) => return Err(format!("no user {user:?} in the sandbox's /etc/passwd")),
    };
    let mut groups = vec![gid];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            continue;
        }
        let Ok(g) = f[2].parse::<u32>() else { continue };
        if f[3].split(',').any(|m| m.trim() == name) && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let home = if home.is_empty() { "/".into() } else { home };
    Ok(Account {
        name,
        uid,
        gid,
        groups,
        home,
    })
}

/// [`lookup`] against the sandbox's files (a missing `/etc/group` means no extra groups).
pub fn find(user: &str) -> Result<Account, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    lookup(user, &passwd, &group)
}

/// Makes `cmd`'s child drop to `a` before it runs: groups, then gid, then uid (after which
/// the others cannot be changed any more).
pub fn drop_to(cmd: &mut Command, a: &Account) {
    let groups: Vec<libc::gid_t> = a.groups.clone();
    let (uid, gid) = (a.uid, a.gid);
    #[allow(unsafe_code)]
    // SAFETY: the closure only makes async-signal-safe system calls on memory captured
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A start as `a` that failed with EPERM: the switch itself was refused. Says what is
/// missing instead of a bare "not permitted".
pub fn refused(e: io::Error, a: &Account) -> io::Error {
    if e.raw_os_error() != Some(libc::EPERM) {
        return e;
    }
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "cannot run as {:?}: the sandbox's agent may not switch users (it needs CAP_SETUID \
             and CAP_SETGID; on docker add SETUID and SETGID to providers.docker.added_caps)",
            a.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::lookup;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        user:x:1000:1000::/home/user:/bin/bash\n\
        svc:x:998:997::/:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nuser:x:1000:\nsudo:x:27:user,svc\ndocker:x:999: user \n";

    #[test]
    fn by_name_with_groups() {
        let a = lookup("user", PASSWD, GROUP).expect("user");
        assert_eq!((a.uid, a.gid, a.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(a.groups, vec![1000, 27, 999]);
    }

    #[test]
    fn by_uid_and_unknown() {
        assert_eq!(lookup("998", PASSWD, GROUP).expect("uid").name, "svc");
        let anon = lookup("4242", PASSWD, GROUP).expect("bare uid");
        assert_eq!((anon.uid, anon.gid, anon.home.as_str()), (4242, 4242, "/"));
        let e = lookup("nobody-here", PASSWD, GROUP).expect_err("unknown");
        assert!(e.contains("nobody-here"), "{e}");
        assert_eq!(lookup("root", PASSWD, "").expect("root").groups, vec![0]);
    }
}
