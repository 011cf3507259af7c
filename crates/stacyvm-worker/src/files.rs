//! The buffered file methods (`worker.file_*`): whole files travel base64 inside the JSON
//! envelope. The streamed pair is in `files_stream.rs`.

use bytes::Bytes;
use stacyvm_protocol::{
    base64, FileChmodParams, FileDeleteParams, FileGlobParams, FileGlobResult, FileListResult,
    FileMoveParams, FilePathParams, FileReadResult, FileStatResult, FileWriteParams, RpcFailure,
};

use crate::error::failed_for;
use crate::methods::provider_for;
use crate::rpc::Reply;
use crate::state::WorkerState;

pub(crate) async fn write(state: &WorkerState, p: FileWriteParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let mode = Some(p.mode.as_str()).filter(|m| !m.trim().is_empty());
    provider
        .write_file(p.target.runtime(), &p.path, Bytes::from(p.content), mode)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::void()
}

pub(crate) async fn read(state: &WorkerState, p: FilePathParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let data = provider
        .read_file(p.target.runtime(), &p.path)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::json(FileReadResult {
        sandbox_id: p.target.sandbox_id.into_string(),
        content: base64::encode(&data),
    })
}

/// An empty path lists `/`.
pub(crate) async fn list(state: &WorkerState, p: FilePathParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let path = if p.path.trim().is_empty() {
        "/"
    } else {
        &p.path
    };
    let files = provider
        .list_files(p.target.runtime(), path)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::json(FileListResult {
        sandbox_id: p.target.sandbox_id.into_string(),
        files,
    })
}

pub(crate) async fn delete(state: &WorkerState, p: FileDeleteParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    provider
        .delete_file(p.target.runtime(), &p.path, p.recursive)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::void()
}

pub(crate) async fn move_file(state: &WorkerState, p: FileMoveParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    provider
        .move_file(p.target.runtime(), &p.old_path, &p.new_path)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::void()
}

pub(crate) async fn chmod(state: &WorkerState, p: FileChmodParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    provider
        .chmod(p.target.runtime(), &p.path, &p.mode)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::void()
}

pub(crate) async fn stat(state: &WorkerState, p: FilePathParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let file = provider
        .stat_file(p.target.runtime(), &p.path)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::json(FileStatResult {
        sandbox_id: p.target.sandbox_id.into_string(),
        file,
    })
}

pub(crate) async fn glob(state: &WorkerState, p: FileGlobParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let matches = provider
        .glob(p.target.runtime(), &p.pattern)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::json(FileGlobResult {
        sandbox_id: p.target.sandbox_id.into_string(),
        matches,
    })
}
