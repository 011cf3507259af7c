//! `filesystem.Filesystem` (e2b-wire.md §2.3) and envd's `/files` upload and download, over
//! the native file service.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use stacyvm_types::FileInfo;

use super::connect::{self, Code, ConnectError};
use super::{rest_error, Call, Target};
use crate::error::ServiceError;
use crate::http::AppState;

/// Entries one `ListDir` answers at most (a deep listing of a big tree is cut there).
const MAX_ENTRIES: usize = 10_000;
/// Deepest `ListDir` walk.
const MAX_DEPTH: u32 = 32;

#[derive(Deserialize, Default)]
#[serde(default)]
struct PathRequest {
    path: String,
    depth: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MoveRequest {
    source: String,
    destination: String,
}

/// envd's `EntryInfo`. `size` is an int64, a string in protobuf JSON.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct EntryInfo {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
    size: String,
    mode: u32,
    permissions: String,
    owner: String,
    group: String,
    modified_time: String,
}

#[derive(Serialize)]
struct EntryResponse {
    entry: EntryInfo,
}

#[derive(Serialize)]
struct ListResponse {
    entries: Vec<EntryInfo>,
}

#[derive(Serialize)]
struct Empty {}

/// Permission bits from a native mode: octal Go `FileMode` (`644`, `20000000755`) or its
/// string form (`-rw-r--r--`, `drwxr-xr-x`).
fn perm_bits(mode: &str) -> u32 {
    if let Ok(n) = u64::from_str_radix(mode, 8) {
        return u32::try_from(n & 0o777).unwrap_or(0);
    }
    let tail: Vec<char> = mode.chars().rev().take(9).collect();
    tail.iter()
        .enumerate()
        .filter(|(_, c)| !matches!(c, '-'))
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

fn permissions(is_dir: bool, bits: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(if is_dir { 'd' } else { '-' });
    for i in (0..9).rev() {
        let set = bits & (1 << i) != 0;
        s.push(match (set, i % 3) {
            (false, _) => '-',
            (true, 2) => 'r',
            (true, 1) => 'w',
            (true, _) => 'x',
        });
    }
    s
}

/// `path` as the client sees it: absolute, native lists answer paths below `/` without it.
fn entry(f: &FileInfo, shown_path: Option<&str>) -> EntryInfo {
    let path = match shown_path {
        Some(p) => p.to_string(),
        None if f.path.starts_with('/') => f.path.clone(),
        None => format!("/{}", f.path),
    };
    let name = path
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("/")
        .to_string();
    let bits = perm_bits(&f.mode);
    EntryInfo {
        name,
        kind: if f.is_dir {
            "FILE_TYPE_DIRECTORY"
        } else {
            "FILE_TYPE_FILE"
        },
        path,
        size: f.size.to_string(),
        mode: bits,
        permissions: permissions(f.is_dir, bits),
        owner: String::new(),
        group: String::new(),
        modified_time: f.mod_time.clone(),
    }
}

/// Dispatches one `filesystem.Filesystem` method.
pub async fn call(c: &Call<'_>, method: &str) -> Response {
    if let Some(r) = super::watch::call(c, method).await {
        return r;
    }
    let res = match method {
        "Stat" => stat(c).await,
        "ListDir" => list_dir(c).await,
        "MakeDir" => make_dir(c).await,
        "Move" => move_entry(c).await,
        "Remove" => remove(c).await,
        _ => Err(ConnectError::unimplemented("filesystem.Filesystem", method)),
    };
    c.answer(res)
}

/// File errors name the path the client gave, never a backend's.
fn fs_error(path: &str) -> impl Fn(ServiceError) -> ConnectError + '_ {
    move |e| match e {
        ServiceError::FileNotFound(_) => {
            ConnectError::new(Code::NotFound, format!("path {path:?} does not exist"))
        }
        other => other.into(),
    }
}

/// `{entry}` of `path`, as `Stat`, `MakeDir` and `Move` answer.
async fn entry_response(c: &Call<'_>, path: &str) -> Result<Response, ConnectError> {
    let f =
        c.st.svc
            .files()
            .stat(&c.t.id, path)
            .await
            .map_err(fs_error(path))?;
    Ok(connect::unary_ok(&EntryResponse {
        entry: entry(&f, Some(path)),
    }))
}

async fn stat(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: PathRequest = c.decode()?;
    entry_response(c, &c.t.resolve(&req.path)).await
}

async fn list_dir(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: PathRequest = c.decode()?;
    let path = c.t.resolve(&req.path);
    let depth = req.depth.unwrap_or(1).clamp(1, MAX_DEPTH);
    let files = c.st.svc.files();
    let top = files.stat(&c.t.id, &path).await.map_err(fs_error(&path))?;
    if !top.is_dir {
        return Err(ConnectError::invalid(format!(
            "path {path:?} is not a directory"
        )));
    }
    let mut entries = Vec::new();
    // Breadth first, one native listing per directory.
    let mut level = vec![path.clone()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in level {
            for f in &files.list(&c.t.id, &dir).await.map_err(fs_error(&dir))? {
                let e = entry(f, None);
                if f.is_dir {
                    next.push(e.path.clone());
                }
                entries.push(e);
                if entries.len() >= MAX_ENTRIES {
                    return Ok(connect::unary_ok(&ListResponse { entries }));
                }
            }
        }
        level = next;
    }
    Ok(connect::unary_ok(&ListResponse { entries }))
}

/// Creates the directory and its parents; `already_exists` when it exists (the SDK answers
/// `False`). The file API creates parents on write, so a marker written and removed makes it.
async fn make_dir(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: PathRequest = c.decode()?;
    let path = c.t.resolve(&req.path);
    let files = c.st.svc.files();
    match files.stat(&c.t.id, &path).await {
        Ok(_) => {
            return Err(ConnectError::new(
                Code::AlreadyExists,
                format!("path {path:?} already exists"),
            ))
        }
        Err(ServiceError::FileNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let created = to_hand_over(c.st, c.t, &path).await?;
    let marker = format!(
        "{}/.stacyvm-mkdir-{}",
        path.trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    );
    files
        .write(&c.t.id, &marker, Bytes::new(), None)
        .await
        .map_err(fs_error(&path))?;
    files
        .delete(&c.t.id, &marker, false)
        .await
        .map_err(fs_error(&path))?;
    hand_over(c.st, c.t, created).await?;
    entry_response(c, &path).await
}

/// For a call with a (non-root) user: the user and what writing `path` creates, to give to
/// that user once written ([`hand_over`]).
async fn to_hand_over(
    st: &AppState,
    t: &Target,
    path: &str,
) -> Result<Option<(String, String)>, ServiceError> {
    match t.user.as_deref() {
        None | Some("root" | "0") => Ok(None),
        Some(u) => {
            let top = st.svc.e2b().first_missing(&t.id, path).await?;
            Ok(Some((u.to_string(), top)))
        }
    }
}

async fn hand_over(
    st: &AppState,
    t: &Target,
    created: Option<(String, String)>,
) -> Result<(), ServiceError> {
    match created {
        Some((user, top)) => st.svc.e2b().give_to(&t.id, &user, &top).await,
        None => Ok(()),
    }
}

async fn move_entry(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: MoveRequest = c.decode()?;
    let (from, to) = (c.t.resolve(&req.source), c.t.resolve(&req.destination));
    c.st.svc
        .files()
        .rename(&c.t.id, &from, &to)
        .await
        .map_err(fs_error(&from))?;
    entry_response(c, &to).await
}

async fn remove(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: PathRequest = c.decode()?;
    let path = c.t.resolve(&req.path);
    c.st.svc
        .files()
        .delete(&c.t.id, &path, true)
        .await
        .map_err(fs_error(&path))?;
    Ok(connect::unary_ok(&Empty {}))
}

// --- /files ------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct FilesQuery {
    path: Option<String>,
    /// The SDK's `user=` for `/files` (the Connect calls send it as Basic auth).
    pub(super) username: Option<String>,
}

fn file_error(e: ServiceError, path: &str) -> Response {
    match e {
        ServiceError::FileNotFound(_) => rest_error(
            StatusCode::NOT_FOUND,
            &format!("path {path:?} does not exist"),
        ),
        other => {
            let c = ConnectError::from(other);
            rest_error(c.code.http_status(), &c.message)
        }
    }
}

/// `GET /files?path=`: the file's bytes.
pub async fn download(st: &AppState, t: &Target, q: FilesQuery) -> Response {
    let Some(path) = q.path.filter(|p| !p.is_empty()) else {
        return rest_error(StatusCode::BAD_REQUEST, "path is required");
    };
    let path = t.resolve(&path);
    match st.svc.files().read(&t.id, &path).await {
        Ok(f) => crate::http::files::download(f),
        Err(e) => file_error(e, &path),
    }
}

#[derive(Serialize)]
struct WriteInfo {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
}

fn written(path: String) -> WriteInfo {
    WriteInfo {
        name: path.rsplit('/').next().unwrap_or("").to_string(),
        kind: "file",
        path,
    }
}

/// `POST /files?path=`: a multipart form (one part per file; without `path` each part's file
/// name is its path) or, from envd 0.5.7 on, the raw body. `Content-Encoding: gzip` bodies are
/// inflated.
pub async fn upload(st: &AppState, t: &Target, q: FilesQuery, req: Request) -> Response {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let gzip = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let query_path = q.path.filter(|p| !p.is_empty()).map(|p| t.resolve(&p));
    let max = st.svc.settings().max_body_bytes;
    if ctype.starts_with("multipart/form-data") {
        let boundary = match multer::parse_boundary(&ctype) {
            Ok(b) => b,
            Err(_) => {
                return rest_error(StatusCode::BAD_REQUEST, "multipart body without a boundary")
            }
        };
        let mut form = multer::Multipart::new(req.into_body().into_data_stream(), boundary);
        let mut out = Vec::new();
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return rest_error(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid multipart body: {e}"),
                    )
                }
            };
            let path = match (&query_path, field.file_name()) {
                (Some(p), _) => p.clone(),
                (None, Some(name)) if !name.is_empty() => t.resolve(name),
                _ => {
                    return rest_error(
                        StatusCode::BAD_REQUEST,
                        "path is required (query or file name)",
                    )
                }
            };
            let data = match read_limited(field, max).await {
                Ok(d) => d,
                Err(r) => return *r,
            };
            let data = if gzip {
                match gunzip(&data, max) {
                    Ok(d) => d,
                    Err(r) => return *r,
                }
            } else {
                data
            };
            let res = match to_hand_over(st, t, &path).await {
                Ok(created) => match st.svc.files().write(&t.id, &path, data, None).await {
                    Ok(()) => hand_over(st, t, created).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                return file_error(e, &path);
            }
            out.push(written(path));
        }
        return super::json(StatusCode::OK, &out);
    }
    let Some(path) = query_path else {
        return rest_error(StatusCode::BAD_REQUEST, "path is required");
    };
    let created = match to_hand_over(st, t, &path).await {
        Ok(c) => c,
        Err(e) => return file_error(e, &path),
    };
    let res = if gzip {
        let data = match read_limited(req.into_body().into_data_stream(), max).await {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let data = match gunzip(&data, max) {
            Ok(d) => d,
            Err(r) => return *r,
        };
        st.svc.files().write(&t.id, &path, data, None).await
    } else {
        let body = req
            .into_body()
            .into_data_stream()
            .map(|r| {
                r.map_err(|e| {
                    stacyvm_provider::ProviderError::InvalidInput(format!(
                        "upload interrupted: {e}"
                    ))
                })
            })
            .boxed();
        st.svc
            .files()
            .write_stream(&t.id, &path, body, None)
            .await
            .map(|_| ())
    };
    let res = match res {
        Ok(()) => hand_over(st, t, created).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => super::json(StatusCode::OK, &[written(path)]),
        Err(e) => file_error(e, &path),
    }
}

/// Collects a body of at most `max` bytes (413 past it).
async fn read_limited<S, E>(mut s: S, max: usize) -> Result<Bytes, Box<Response>>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| {
            Box::new(rest_error(
                StatusCode::BAD_REQUEST,
                &format!("upload interrupted: {e}"),
            ))
        })?;
        if buf.len() + chunk.len() > max {
            return Err(Box::new(too_large(max)));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn too_large(max: usize) -> Response {
    rest_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("file is larger than {max} bytes (server.max_body_bytes)"),
    )
}

fn gunzip(data: &[u8], max: usize) -> Result<Bytes, Box<Response>> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| {
            Box::new(rest_error(
                StatusCode::BAD_REQUEST,
                "body is not valid gzip",
            ))
        })?;
    if out.len() > max {
        return Err(Box::new(too_large(max)));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(path: &str, mode: &str, is_dir: bool) -> FileInfo {
        FileInfo {
            path: path.into(),
            size: 5,
            mode: mode.into(),
            is_dir,
            mod_time: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn entries_look_like_envds() {
        let e = entry(&info("tmp/a.txt", "-rw-r--r--", false), None);
        assert_eq!(e.name, "a.txt");
        assert_eq!(e.path, "/tmp/a.txt");
        assert_eq!(e.mode, 0o644);
        assert_eq!(e.permissions, "-rw-r--r--");
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["type"], "FILE_TYPE_FILE");
        assert_eq!(j["size"], "5");
        assert_eq!(j["modifiedTime"], "2026-01-01T00:00:00Z");
        let d = entry(&info("/x", "20000000755", true), Some("/x"));
        assert_eq!(
            (d.mode, d.kind, d.permissions.as_str()),
            (0o755, "FILE_TYPE_DIRECTORY", "drwxr-xr-x")
        );
        assert_eq!(entry(&info("/", "20000000755", true), None).name, "/");
    }

    #[test]
    fn gzip_bodies_inflate_within_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[7u8; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000).unwrap().len(), 1000);
        assert_eq!(
            gunzip(&gz, 999).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            gunzip(b"nope", 10).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
