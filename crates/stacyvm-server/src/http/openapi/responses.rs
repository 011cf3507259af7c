//! Shared pieces of the document: the error answers (`#/components/responses/*`, each the
//! `Error` body with an example) and the path and header parameters many routes take.

use serde_json::json;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoParams, ToResponse, ToSchema};

fn error(description: &str, examples: &[(&str, &str, &str)]) -> RefOr<Response> {
    let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error")));
    content = match examples {
        [(_, code, message)] => content.example(Some(json!({"code": code, "message": message}))),
        many => content.examples_from_iter(many.iter().map(|(name, code, message)| {
            (
                *name,
                utoipa::openapi::example::ExampleBuilder::new()
                    .value(Some(json!({"code": code, "message": message}))),
            )
        })),
    };
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content.build())
        .build()
        .into()
}

/// An error answer: `name`, its description and example(s) (`(example name, code, message)`).
macro_rules! error_responses {
    ($($name:ident: $description:literal, [$(($ex:literal, $code:literal, $message:literal)),+ $(,)?];)+) => {$(
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error($description, &[$(($ex, $code, $message)),+]))
            }
        }
    )+};
}

error_responses! {
    BadRequest: "Invalid input", [("", "BAD_REQUEST",
        "invalid input: invalid ttl format: time: invalid duration \"forever\"")];
    Unauthorized: "Missing or wrong API key (only when keys are configured)",
        [("", "UNAUTHORIZED", "invalid or missing API key")];
    Forbidden: "Authenticated but not allowed (e.g. admin route without the admin key)",
        [("", "FORBIDDEN", "admin API key required")];
    NotFound: "Unknown or destroyed sandbox, template, quota, worker or provider",
        [("", "NOT_FOUND", "sandbox not found: sb-0123abcd")];
    FileNotFound: "Unknown sandbox (`NOT_FOUND`) or missing file (`FILE_NOT_FOUND`)", [
        ("file", "FILE_NOT_FOUND", "file not found: /workspace/x"),
        ("sandbox", "NOT_FOUND", "sandbox not found: sb-0123abcd"),
    ];
    Conflict: "Conflict (exists already, or a lease held elsewhere)",
        [("", "CONFLICT", "conflict: template already exists")];
    Timeout: "Exec hit its timeout", [("", "TIMEOUT", "exec timeout: sb-0123abcd")];
    PayloadTooLarge: "Request body above `max_body_bytes`",
        [("", "PAYLOAD_TOO_LARGE", "request body too large")];
    ResourceLimit: "A limit was hit (sandboxes, per owner, ttl, exec timeout, spawn queue, rate limit)",
        [("", "RESOURCE_LIMIT", "resource limit exceeded: max sandboxes reached (5)")];
    InternalError: "Server or provider failure (details are only logged)",
        [("", "INTERNAL_ERROR", "injected spawn failure")];
    Unavailable: "Provider or remote worker unavailable",
        [("", "UNAVAILABLE", "provider unavailable: docker daemon not reachable")];
    ProcessNotFound: "Unknown sandbox (`NOT_FOUND`) or process (`PROCESS_NOT_FOUND`)", [
        ("process", "PROCESS_NOT_FOUND", "process not found: 4242"),
        ("sandbox", "NOT_FOUND", "sandbox not found: sb-0123abcd"),
    ];
    ProcessConflict: "The process's state refuses the call: stdin closed or never opened (`STDIN_CLOSED`), the process exited (`PROCESS_EXITED`), or it has no terminal (`NOT_A_PTY`, resize); or the sandbox is paused (`SANDBOX_PAUSED`)", [
        ("stdin_closed", "STDIN_CLOSED", "stdin of process 7 is closed"),
        ("exited", "PROCESS_EXITED", "process 7 has exited"),
        ("not_a_pty", "NOT_A_PTY", "process 7 has no terminal"),
        ("paused", "SANDBOX_PAUSED", "sandbox is paused: sandbox sb-0123abcd is paused; resume it first (POST /sandboxes/sb-0123abcd/resume)"),
    ];
    SandboxPaused: "The sandbox is paused (`SANDBOX_PAUSED`): resume it first",
        [("", "SANDBOX_PAUSED", "sandbox is paused: sandbox sb-0123abcd is paused; resume it first (POST /sandboxes/sb-0123abcd/resume)")];
    WatchConflict: "The sandbox is paused (`SANDBOX_PAUSED`), or its provider or worker cannot watch directories (`NOT_SUPPORTED`)", [
        ("paused", "SANDBOX_PAUSED", "sandbox is paused: sandbox sb-0123abcd is paused; resume it first (POST /sandboxes/sb-0123abcd/resume)"),
        ("not_supported", "NOT_SUPPORTED", "not supported: worker worker-a predates directory watches; upgrade it"),
    ];
    PauseConflict: "The sandbox's state cannot move that way (`CONFLICT`), or its provider cannot pause (`NOT_SUPPORTED`)", [
        ("state", "CONFLICT", "conflict: sandbox sb-0123abcd is error; only a running sandbox can be paused"),
        ("not_supported", "NOT_SUPPORTED", "not supported: the bwrap provider has no cgroup freezer here"),
    ];
    VolumeConflict: "The name is taken (`CONFLICT`), the volume's provider cannot keep volumes (`NOT_SUPPORTED`), or the worker asked for cannot take it now (`WORKER_UNAVAILABLE`)", [
        ("taken", "CONFLICT", "conflict: volume \"data\" already exists"),
        ("not_supported", "NOT_SUPPORTED", "not supported: the microvm provider cannot mount volumes"),
        ("worker_unavailable", "WORKER_UNAVAILABLE", "worker unavailable: worker worker-a is not answering its heartbeats"),
    ];
    SnapshotNotFound: "Unknown snapshot (`SNAPSHOT_NOT_FOUND`)",
        [("", "SNAPSHOT_NOT_FOUND", "snapshot not found: snap-0123abcd")];
    VolumeInUse: "A sandbox that is not destroyed mounts the volume (`VOLUME_IN_USE`)",
        [("", "VOLUME_IN_USE", "volume in use: volume \"data\" is in use by sandbox sb-0123abcd")];
    SpawnConflict: "A volume is mounted read-write by another live sandbox (`CONFLICT`), the provider cannot mount volumes or snapshots (`NOT_SUPPORTED`), or the worker holding the volumes or snapshot cannot take the sandbox (`WORKER_UNAVAILABLE`)", [
        ("volume_taken", "CONFLICT", "conflict: volume \"data\" is mounted read-write by sandbox sb-0123abcd"),
        ("not_supported", "NOT_SUPPORTED", "not supported: the microvm provider cannot mount volumes"),
        ("worker", "WORKER_UNAVAILABLE", "worker unavailable: the sandbox's volumes live on worker local, which cannot take it now (placed on worker-a)"),
    ];
    WorkerUnauthorized: "Missing or wrong worker credentials",
        [("", "UNAUTHORIZED", "invalid or missing worker credentials")];
    WorkerForbidden: "Credential for another worker (code `UNAUTHORIZED`) or scope missing (code `FORBIDDEN`)", [
        ("other_worker", "UNAUTHORIZED", "worker credential does not match requested worker"),
        ("scope", "FORBIDDEN", "required authorization scope missing"),
    ];
    WorkerAuthUnavailable: "No worker credential of any kind is configured",
        [("", "UNAVAILABLE", "worker token is not configured")];
}

/// An owner id as `stacyvm_types::validate_owner_id` accepts it (a schema only: owners are
/// plain strings in the views).
pub struct OwnerIdString;

impl utoipa::PartialSchema for OwnerIdString {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(128))
            .pattern(Some(r"^[^/\\\s\x00-\x1f\x7f]+$"))
            .description(Some(
                "≤128 characters, no `/`, `\\`, whitespace or control characters.",
            ))
            .into()
    }
}

impl ToSchema for OwnerIdString {}

/// `{id}`: a sandbox.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SandboxIdParam {
    #[param(pattern = r"^sb-[0-9a-f]{8}$", example = "sb-0123abcd")]
    #[expect(dead_code, reason = "a parameter description, never built")]
    id: String,
}

/// `{name}`: a template.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TemplateNameParam {
    #[param(max_length = 128)]
    #[expect(dead_code, reason = "a parameter description, never built")]
    name: String,
}

/// `{name}`: a volume.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VolumeNameParam {
    #[param(max_length = 64)]
    #[expect(dead_code, reason = "a parameter description, never built")]
    name: String,
}

/// `{owner}`: a quota owner.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OwnerParam {
    #[param(value_type = OwnerIdString)]
    #[expect(dead_code, reason = "a parameter description, never built")]
    owner: String,
}

/// `{id}`: a worker.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkerIdParam {
    #[param(example = "local")]
    #[expect(dead_code, reason = "a parameter description, never built")]
    id: String,
}

/// `{id}` and `{resource}` of a lease renewal.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LeaseParams {
    #[param(example = "w1")]
    #[expect(dead_code, reason = "a parameter description, never built")]
    id: String,
    /// The leased resource, e.g. a sandbox id.
    #[expect(dead_code, reason = "a parameter description, never built")]
    resource: String,
}

/// `{name}`: a provider.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProviderNameParam {
    #[param(example = "mock")]
    #[expect(dead_code, reason = "a parameter description, never built")]
    name: String,
}

/// The `X-User-ID` header.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct UserIdHeader {
    /// Owner of the request; overrides `owner_id` in the body.
    #[param(rename = "X-User-ID", value_type = Option<OwnerIdString>)]
    #[expect(dead_code, reason = "a parameter description, never built")]
    user_id: Option<String>,
}

/// `fn $name() -> Object`: a string schema with exactly these values, for the views whose
/// closed sets are `&'static str` (used as `#[schema(schema_with = ...)]`).
macro_rules! string_enums {
    ($($name:ident: [$($value:literal),+ $(,)?];)+) => {$(
        pub fn $name() -> utoipa::openapi::Object {
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .enum_values(Some([$($value),+]))
                .build()
        }
    )+};
}

string_enums! {
    admission_reasons: ["max_ttl", "worker_unavailable", "remote_worker_rpc_unavailable",
        "max_sandboxes", "max_sandboxes_per_owner"];
    exec_modes: ["", "shell", "argv"];
    output_streams: ["stdout", "stderr"];
    exit_stream: ["exit"];
    empty: [""];
    health_states: ["ok", "alive"];
    ready_states: ["ready", "not_ready"];
    sandbox_states: ["creating", "running", "error", "unhealthy", "expired", "destroyed", "paused", "destroying"];
    token_audiences: ["worker:control-plane", "worker:rpc"];
    on_expire_values: ["", "destroy", "pause"];
}
