//! YAML fixtures shared by the config test files.

#![allow(dead_code)]

pub const STAGING_CONTROL_PLANE: &str = r#"server:
  host: "127.0.0.1"
  port: 7423

providers:
  default: "mock"
  mock:
    enabled: true
  docker:
    enabled: false
  firecracker:
    enabled: false

auth:
  api_key: "dev-api-key-dev-api-key-dev-api-key"
  admin_api_key: "dev-admin-key-dev-admin-key-dev"
  worker_token: "dev-worker-token-dev-worker-token"
  worker_tokens:
    worker-a: "dev-worker-a-token-dev-worker-a-token"
  admin_fallback_enabled: false

database:
  driver: "sqlite"
  path: "/tmp/stacyvm-remote-worker-staging.db"
"#;

pub const STAGING_WORKER: &str = r#"worker:
  id: "worker-a"
  control_plane_url: "http://127.0.0.1:7423"
  listen_addr: "127.0.0.1:7430"
  preview_domain: "localhost"
  heartbeat_interval: "2s"

providers:
  default: "mock"
  mock:
    enabled: true
  docker:
    enabled: false
  firecracker:
    enabled: false

auth:
  worker_token: "dev-worker-a-token-dev-worker-a-token"
"#;

pub const EVERY_KEY: &str = r#"
server:
  {host: "::1", port: 8080, preview_domain: preview.example.com, preview_proxy: false,
   allow_unauthenticated: true, preview_unisolated: true, reconcile_interval: 45s,
   cors_allowed_origins: ["https://app.example.com", "http://localhost:3000"],
   trusted_proxies: [10.0.0.0/8],
   max_body_bytes: 1048576, max_exec_output: 2097152, max_sync_execs: 4,
   shutdown_timeout: 5s, ui: false}
limits: {max_memory_mb: 2048, max_vcpus: 4, max_disk_mb: 4096}
worker:
  {id: w1, control_plane_url: https://cp.example.com, listen_addr: 0.0.0.0:7430,
   preview_domain: w1.example.com, heartbeat_interval: 5s, shutdown_timeout: 20s,
   stale_after_intervals: 4, rpc_tls:
     {enabled: true, server_cert_file: /tls/server.crt, server_key_file: /tls/server.key,
      client_ca_file: /tls/clients.pem, ca_file: /tls/ca.pem, client_cert_file: /tls/client.crt,
      client_key_file: /tls/client.key, server_name: worker.internal, insecure_skip_verify: true}}
providers:
  default: docker
  mock: {enabled: true}
  firecracker:
    {enabled: true, firecracker_path: /opt/fc, kernel_path: /opt/vmlinux,
     default_rootfs: /opt/rootfs.ext4, agent_path: /opt/agent, data_dir: /opt/data}
  docker:
    {enabled: true, socket: "unix:///run/docker.sock", runtime: runsc,
     default_image: "ubuntu:24.04", network_mode: none, seccomp_profile: /etc/seccomp.json,
     read_only_rootfs: true, memory: 1g, cpus: 2.5, pids_limit: 128, user: "1000:1000",
     dropped_caps: [NET_RAW], added_caps: [CHOWN], tmpfs: {/tmp: "rw,size=64m"},
     agent_path: /opt/stacyvm-agent,
     pool_security:
       {per_user_uid: true, pid_namespace: true, workspace_permissions: false, hidepid: true}}
  e2b: {enabled: true, api_key: e2b-secret, base_url: "https://e2b.example.com"}
  custom:
    {enabled: true, name: mine, base_url: "https://custom.example.com", api_key: custom-secret,
     timeout: 2m}
  proot:
    {enabled: true, rootfs_path: /r, proot_binary: /usr/bin/proot, workspace_base: /w,
     default_timeout: 90s, max_sandboxes: 3, max_memory_mb: 256, max_disk_mb: 2048,
     languages: [ruby]}
  microvm:
    {enabled: true, qemu_path: /usr/bin/qemu-system-x86_64, kernel_path: /vm/vmlinux,
     initrd_path: /vm/initrd.img, data_dir: /vm/data, accel: tcg, warm_pool: 2,
     network_mode: user}
  bwrap:
    {enabled: true, data_dir: /srv/bwrap, images_dir: /srv/images, bwrap_path: /usr/local/bin/bwrap,
     agent_path: /opt/agent, network_mode: user, pasta_path: /usr/local/bin/pasta, pids_limit: 64,
     cgroup_parent: sandboxes, dns: [192.0.2.53]}
defaults:
  {ttl: 1h, image: "python:3.12", memory_mb: 2048, vcpus: 2, disk_size_mb: 4096, pool_size: 3,
   pool_template: py, max_ttl: 48h, default_exec_timeout: 30s, max_exec_timeout: 20m,
   max_sandboxes: 50, max_sandboxes_per_owner: 5, spawn_overflow: queue,
   spawn_queue_timeout: 1m, max_spawn_queue: 10, max_paused_sandboxes: 7}
lifecycle: {paused_retention: 48h, snapshot_grace: 1h}
e2b:
  {enabled: false, listen: "127.0.0.1:7424", domain: e2b.example.com,
   templates: {base: {image: "debian:12", provider: docker, memory_mb: 512, vcpus: 1,
                      workdir: /home/user}}}
auth:
  {api_key: api-secret, admin_api_key: admin-secret, admin_fallback_enabled: false,
   worker_token: shared-secret, worker_token_file: /secrets/worker-token,
   worker_tokens: {w1: w1-secret}, worker_signing_key: signing-secret,
   worker_signing_key_file: /secrets/signing-key, worker_signing_keys: [old-signing-secret],
   worker_revoked_token_ids: [abc123], admin_audit_retention: 720h,
   oidc_issuer: "https://idp.example.com", oidc_audience: stacyvm,
   oidc_jwks_url: "https://idp.example.com/jwks", oidc_public_key: oidc-key,
   oidc_public_key_file: /secrets/oidc.pem, oidc_groups_claim: roles, oidc_tenant_claim: org,
   oidc_admin_groups: [admins], oidc_operator_groups: [ops], oidc_viewer_groups: [viewers],
   enabled: true, oidc_enabled: true}
rate_limit:
  {enabled: true, requests_per_minute: 600, burst: 100, key_by: ip, bucket_ttl: 30m,
   cleanup_interval: 2m}
database: {driver: postgres, path: other.db, dsn: "postgres://stacy:pg-secret@db/stacyvm"}
logging: {level: debug, format: pretty}
pool:
  {enabled: true, max_vms: 20, max_users_per_vm: 8, image: "debian:12", memory_mb: 4096,
   vcpus: 4, overflow: queue}
processes: {output_buffer: 2097152, retain_exited: 1h, agent: /opt/stacyvm/stacyvm-agent}
images:
  {root: /srv/images, insecure_registries: ["registry.lan:5000"], ca_file: /etc/ca.pem,
   registry_auth: {"ghcr.io": "user:token"}}
"#;
