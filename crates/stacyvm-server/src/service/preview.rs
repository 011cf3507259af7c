//! Preview URLs (`http://{port}-{id}.{preview_domain}`, built by the SDKs): which sandbox and
//! port a request's host names, whether the request may pass (the sandbox's preview token,
//! docs/preview.md), and where the server behind that port is: a connection to a local
//! sandbox's port, or the worker that runs it. The HTTP transport (`http/preview.rs`) does the
//! proxying.

use stacyvm_provider::{PreviewConn, ProviderError};
use stacyvm_types::{Placement, Sandbox, SandboxId, SandboxState};
use tokio::net::TcpStream;

use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::remote::RemotePreview;
/// What a preview host names: `{port}-{sandbox_id}.{domain}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewHost<'a> {
    pub port: u16,
    pub sandbox_id: &'a str,
    pub domain: &'a str,
}

impl<'a> PreviewHost<'a> {
    /// Parses a host name without its `:port` (lower case, as browsers send it). `None` when it
    /// does not have the preview shape, so the request is an ordinary API request.
    pub fn parse(host: &'a str) -> Option<Self> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let (label, domain) = host.split_once('.')?;
        let (port, sandbox_id) = label.split_once('-')?;
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
        let id_ok = sandbox_id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && sandbox_id.len() <= 128
            && sandbox_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !id_ok || domain.is_empty() {
            return None;
        }
        Some(PreviewHost {
            port,
            sandbox_id,
            domain,
        })
    }
}

/// A preview request the service let through (its token checked, or the sandbox's previews
/// public): the sandbox and the port.
#[derive(Debug)]
pub struct PreviewGrant {
    sandbox: Sandbox,
    port: u16,
}

impl PreviewGrant {
    pub fn sandbox_id(&self) -> &SandboxId {
        &self.sandbox.id
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its previews need no token.
    pub fn public(&self) -> bool {
        self.sandbox.public_preview
    }
}

/// Where an authorised preview request goes.
pub enum PreviewUpstream {
    /// An open connection to the port of a sandbox this control plane runs.
    Local(TcpStream),
    /// The worker that runs the sandbox, which proxies the request itself.
    Remote(RemotePreview),
}

impl Service {
    /// Whether a preview request for `host` may pass, given the tokens it `presented` (from its
    /// headers or cookies; several when a browser sends more than one cookie of that name).
    /// `Ok(None)`: previews are off, or the host is not a preview host of this control plane
    /// (its domain is neither `server.preview_domain` nor the named sandbox's own), so the
    /// request is routed as API.
    ///
    /// Errors: an unknown or destroyed sandbox under the server's preview domain is
    /// `SandboxNotFound`; no token is `PreviewTokenRequired`, a wrong one `PreviewTokenInvalid`
    /// (unless the sandbox's previews are public).
    pub async fn preview_authorize(
        &self,
        host: &PreviewHost<'_>,
        presented: &[&str],
    ) -> ServiceResult<Option<PreviewGrant>> {
        if !self.settings.preview_proxy {
            return Ok(None);
        }
        let server_domain = host
            .domain
            .eq_ignore_ascii_case(&self.settings.preview_domain);
        let id = SandboxId::from(host.sandbox_id);
        let sb = match self.sandboxes().get(&id).await {
            Ok(sb) => sb,
            Err(ServiceError::SandboxNotFound(_)) if !server_domain => return Ok(None),
            Err(e) => return Err(e),
        };
        let own_domain =
            !sb.preview_domain.is_empty() && host.domain.eq_ignore_ascii_case(&sb.preview_domain);
        if !server_domain && !own_domain {
            return Ok(None);
        }
        if !sb.public_preview {
            if presented.is_empty() {
                return Err(ServiceError::PreviewTokenRequired(format!(
                    "previews of sandbox {id} need its preview_token: send it in the \
                     X-Preview-Token (or e2b-traffic-access-token) header, or open the URL once \
                     with ?stacyvm_preview_token=<token> to get a cookie"
                )));
            }
            if !presented.iter().any(|t| sb.preview_token.matches(t)) {
                return Err(ServiceError::PreviewTokenInvalid(format!(
                    "the preview token is not sandbox {id}'s"
                )));
            }
        }
        Ok(Some(PreviewGrant {
            sandbox: sb,
            port: host.port,
        }))
    }

    /// Where the granted request goes: a connection to the port of a local sandbox, or the
    /// worker that runs it.
    ///
    /// Errors: a sandbox that is not running, or whose backend offers no way to that port, is
    /// `PreviewUnavailable`; nothing listening there is `PreviewUpstream`; a worker that does
    /// not proxy previews is `PreviewRemote`, one that cannot be called `Unavailable`.
    pub async fn preview_open(&self, grant: &PreviewGrant) -> ServiceResult<PreviewUpstream> {
        let (sb, port) = (&grant.sandbox, grant.port);
        let id = &sb.id;
        if sb.state != SandboxState::Running {
            return Err(ServiceError::PreviewUnavailable(format!(
                "sandbox {id} is {}",
                sb.state.as_str()
            )));
        }
        if let Placement::Remote(worker) = &sb.placement {
            let w = self.registered_worker(worker).await?;
            let proxies = w
                .capabilities
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == stacyvm_protocol::capability::PREVIEW));
            if !proxies {
                return Err(ServiceError::PreviewRemote(format!(
                    "sandbox {id} runs on worker {worker}, which does not proxy previews \
                     (upgrade the worker)"
                )));
            }
            let (client, endpoint) = self.remote_endpoint(&w)?;
            self.activity.touch(id);
            return Ok(PreviewUpstream::Remote(RemotePreview::new(
                client,
                endpoint,
                id.clone(),
                port,
            )));
        }
        let provider = self.providers.get(&sb.provider)?;
        if !provider.isolated() && !self.settings.preview_unisolated {
            // The mock's "sandbox" ports are the host's loopback: proxying them would open
            // every local service to anyone who can reach the preview domain.
            return Err(ServiceError::PreviewUnavailable(format!(
                "previews of {} sandboxes are off: the provider does not isolate, so its ports \
                 are the host's (set server.preview_unisolated: true to allow)",
                sb.provider
            )));
        }
        match provider.preview_connect(sb.runtime_id(), port).await {
            Ok(PreviewConn::Open(stream)) => {
                self.activity.touch(id);
                Ok(PreviewUpstream::Local(stream))
            }
            Ok(PreviewConn::NotExposed) => Err(ServiceError::PreviewUnavailable(format!(
                "the {} provider exposes no port {port} of sandbox {id}",
                sb.provider
            ))),
            Ok(PreviewConn::Unreachable(e)) => {
                tracing::debug!(sandbox_id = %id, port, error = %e, "preview upstream refused");
                Err(ServiceError::PreviewUpstream(format!(
                    "nothing answered on port {port} of the sandbox"
                )))
            }
            Err(ProviderError::SandboxNotFound(_)) => Err(ServiceError::SandboxNotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_hosts() {
        assert_eq!(
            PreviewHost::parse("3000-sb-0123abcd.localhost"),
            Some(PreviewHost {
                port: 3000,
                sandbox_id: "sb-0123abcd",
                domain: "localhost"
            })
        );
        assert_eq!(
            PreviewHost::parse("8080-sb-1.preview.example.com."),
            Some(PreviewHost {
                port: 8080,
                sandbox_id: "sb-1",
                domain: "preview.example.com"
            })
        );
        for not in [
            "localhost",
            "127.0.0.1",
            "api.example.com",
            "x-sb-1.localhost",
            "0-sb-1.localhost",
            "65536-sb-1.localhost",
            "3000-.localhost",
            "3000-sb-1",
            "3000-sb-1.",
            "3000--x.localhost",
            "3000-sb/1.localhost",
            "123456-sb-1.localhost",
        ] {
            assert_eq!(PreviewHost::parse(not), None, "{not}");
        }
    }

    // Preview hosts arrive before authentication, from anyone (hardening harness,
    // docs/testing.md).
    proptest::proptest! {
        #[test]
        fn any_host_parses_to_what_it_names_or_to_nothing(host in "\\PC{0,80}") {
            if let Some(p) = PreviewHost::parse(&host) {
                proptest::prop_assert!(p.port > 0);
                proptest::prop_assert!(p.sandbox_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
                let again = format!("{}-{}.{}", p.port, p.sandbox_id, p.domain);
                proptest::prop_assert_eq!(PreviewHost::parse(&again), Some(p));
            }
        }

        #[test]
        fn every_url_the_sdk_builds_parses(
            port in 1u16..,
            id in "sb-[0-9a-f]{8}",
            domain in "[a-z0-9]{1,12}(\\.[a-z0-9]{1,12}){0,3}",
            dot in proptest::bool::ANY,
        ) {
            let host = format!("{port}-{id}.{domain}{}", if dot { "." } else { "" });
            let want = PreviewHost { port, sandbox_id: &id, domain: &domain };
            proptest::prop_assert_eq!(PreviewHost::parse(&host), Some(want));
        }
    }
}
