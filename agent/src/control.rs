//! The local control socket: newline-delimited JSON between the CLI (`enroll`, `status`,
//! `unenroll`) and the daemon. Every request is answered by the daemon's main loop.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use contera_protocol::v1::AccountRef;

use crate::failure::{Failure, FailureKind};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest request line accepted, in bytes.
const MAX_REQUEST_BYTES: u64 = 4096;

/// The version of this local API (docs/control-socket.md). It changes only for a change
/// an existing client could trip over; additions (ops, fields, result and failure kinds)
/// keep it.
pub const API_VERSION: u32 = 1;

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Enroll {
        code: String,
    },
    /// Which account `code` would enroll into; commits nothing.
    Preview {
        code: String,
    },
    Status,
    Unenroll,
    /// Which version of this API and of the agent answer.
    Version,
    /// Test hook (built only with the `test-hooks` feature): blocks the daemon's main loop
    /// for `secs`, as a wedged loop would. Honoured only when the daemon also started
    /// with `CONTERA_AGENT_TEST_HOOKS=1`.
    #[cfg(feature = "test-hooks")]
    Freeze {
        secs: u64,
    },
}

/// Never prints the code: requests may end up in a debug log.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Enroll { .. } => f.write_str("Enroll { code: *** }"),
            Request::Preview { .. } => f.write_str("Preview { code: *** }"),
            Request::Status => f.write_str("Status"),
            Request::Unenroll => f.write_str("Unenroll"),
            Request::Version => f.write_str("Version"),
            #[cfg(feature = "test-hooks")]
            Request::Freeze { secs } => write!(f, "Freeze {{ secs: {secs} }}"),
        }
    }
}

/// How long the CLI waits for the daemon: an enrollment may take a connect timeout plus
/// a request timeout, and a daemon silent for longer than this is wedged.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Enrolled {
        recorder_id: String,
        account: AccountRef,
    },
    /// The account a previewed code enrolls into, by name (and its parent's name).
    Preview {
        account_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_name: Option<String>,
    },
    Status(Status),
    Unenrolled {
        was_enrolled: bool,
    },
    /// `{"result": "version", "api": 1, "agent": "0.1.0"}`.
    Version {
        api: u32,
        agent: String,
    },
    /// A request that has nothing to report was carried out.
    Done,
    /// `{"result": "failed", "kind": "…", "message": "…"}`: see [`FailureKind`].
    Failed(Failure),
}

impl Response {
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Response {
        Response::Failed(Failure::new(kind, message))
    }
}

/// What `contera-agent status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub enrolled: bool,
    pub revoked: bool,
    pub recorder_id: Option<String>,
    pub account: Option<AccountRef>,
    pub server: String,
    /// RFC 3339 time of the last heartbeat the server accepted since the daemon started.
    pub last_heartbeat: Option<String>,
    pub certificate_expires: Option<String>,
    pub renew_at: Option<String>,
    /// The last failure talking to the server (or why state cannot be saved), in plain
    /// words; cleared by the next success.
    pub last_error: Option<String>,
    /// The same failure, typed.
    #[serde(default)]
    pub last_failure: Option<Failure>,
    /// Whether the daemon answered (false: read from the state file).
    pub daemon_running: bool,
    /// The last heartbeat said the recorder's account (or one above it) is disabled by
    /// its administrator: heartbeats go on, renewals wait until it is enabled. Absent from
    /// older agents' answers, hence the default.
    #[serde(default)]
    pub account_disabled: bool,
}

/// A request waiting for the main loop's answer.
pub type Command = (Request, oneshot::Sender<Response>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[agent] control_socket {path} exists and is not a socket: point control_socket at a path of its own (the agent removes only a stale socket there)")]
    NotASocket { path: PathBuf },
    #[error("another contera-agent is already running on {path}: stop it first (systemctl stop contera-agent)")]
    InUse { path: PathBuf },
    #[error("the contera-agent daemon is not running (no control socket at {path}): start it with `systemctl start contera-agent` (or `contera-agent run`)")]
    NotRunning { path: PathBuf },
    #[error("permission denied on {path}: run as root or as a member of the contera-agent group")]
    Denied { path: PathBuf },
    #[error("talking to the daemon on {path} failed: {message}")]
    Io { path: PathBuf, message: String },
}

/// Binds the socket (replacing a stale one), mode 0660 so the service's group may use it.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ControlError::Bind {
            path: path.to_owned(),
            source,
        })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a socket is ever removed: a path that names a config file by mistake must
        // not cost that file.
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        // A live daemon answers; a stale socket from a crash refuses and is removed.
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|source| {
        ControlError::Bind {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(listener)
}

/// Accepts connections until `shutdown`, passing each request to the main loop.
pub async fn serve(
    listener: UnixListener,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("control socket accept failed: {e}");
                    continue;
                }
            },
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, commands).await {
                log::debug!("control connection ended: {e}");
            }
        });
    }
}

async fn handle(stream: UnixStream, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read)
        .take(MAX_REQUEST_BYTES)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::failed(
            FailureKind::BadRequest,
            format!("not a control request this agent knows (API version {API_VERSION}): {e}"),
        ),
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            if commands.send((request, tx)).await.is_err() {
                Response::failed(FailureKind::Internal, "the daemon is shutting down")
            } else {
                rx.await.unwrap_or_else(|_| {
                    Response::failed(FailureKind::Internal, "the daemon dropped the request")
                })
            }
        }
    };
    let mut out = serde_json::to_vec(&response).expect("response serialises");
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Sends one request to the daemon and waits for the answer.
pub async fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => ControlError::NotRunning {
                path: path.to_owned(),
            },
            ErrorKind::PermissionDenied => ControlError::Denied {
                path: path.to_owned(),
            },
            _ => ControlError::Io {
                path: path.to_owned(),
                message: e.to_string(),
            },
        })?;
    let io_err = |e: std::io::Error| ControlError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).expect("request serialises");
    line.push(b'\n');
    write.write_all(&line).await.map_err(io_err)?;
    let mut answer = String::new();
    match tokio::time::timeout(CALL_TIMEOUT, BufReader::new(read).read_line(&mut answer)).await {
        Ok(result) => {
            result.map_err(io_err)?;
        }
        Err(_) => {
            return Err(ControlError::Io {
                path: path.to_owned(),
                message: format!(
                    "the daemon did not answer within {} s; check `journalctl -u contera-agent`",
                    CALL_TIMEOUT.as_secs()
                ),
            })
        }
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::Io {
        path: path.to_owned(),
        message: format!("unreadable answer ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_control_socket_path_naming_a_regular_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "[server]\n").unwrap();
        let err = bind(&path).await.unwrap_err();
        assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[server]\n");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&path).await.unwrap();
        assert!(matches!(bind(&path).await, Err(ControlError::InUse { .. })));
        drop(live);
    }

    #[test]
    fn a_failed_answer_keeps_its_wire_shape() {
        let answer = Response::failed(FailureKind::Rejected, "no");
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"result": "failed", "kind": "rejected", "message": "no"})
        );
        let back: Response =
            serde_json::from_str(r#"{"result":"failed","kind":"typo","message":"m"}"#).unwrap();
        assert!(matches!(
            back,
            Response::Failed(Failure {
                kind: FailureKind::Typo,
                ..
            })
        ));
    }
}
