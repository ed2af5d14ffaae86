//! Library error type: a public, non-exhaustive [`ErrorKind`] plus a message that names
//! the file, tensor, node or frame at fault.

use std::fmt;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing a file failed.
    Io,
    /// A checkpoint file is not a readable PyTorch zip or safetensors file.
    Checkpoint,
    /// The checkpoint's pickle uses an opcode or class this reader does not support.
    UnsupportedPickle,
    /// A tensor the model needs is absent from the checkpoint.
    MissingTensor,
    /// A tensor has another shape than the model config implies.
    TensorShape,
    /// The checkpoint holds tensors the model does not use.
    UnexpectedTensor,
    /// The model name or config is not known / not valid.
    Config,
    /// A graph could not be built or violates the export rules.
    Graph,
    /// A runtime backend (ONNX Runtime, TensorRT, CUDA) failed.
    Backend,
    /// Input data (frames, prompts, masks, model dir) is not valid.
    InvalidInput,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::Checkpoint => "bad checkpoint",
            ErrorKind::UnsupportedPickle => "unsupported pickle content",
            ErrorKind::MissingTensor => "missing tensor",
            ErrorKind::TensorShape => "tensor shape mismatch",
            ErrorKind::UnexpectedTensor => "unexpected tensor",
            ErrorKind::Config => "config error",
            ErrorKind::Graph => "graph error",
            ErrorKind::Backend => "backend error",
            ErrorKind::InvalidInput => "invalid input",
        };
        f.write_str(s)
    }
}

/// The library's error: a kind and a message naming what is at fault.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error { kind, message: message.into(), source: Some(Box::new(source)) }
    }

    /// An I/O error that names the path involved.
    pub fn io(path: &std::path::Path, what: &str, err: std::io::Error) -> Self {
        Error::with_source(ErrorKind::Io, format!("{what} '{}': {err}", path.display()), err)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with more context (e.g. the file being read).
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand constructors.
pub(crate) fn graph_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Graph, msg)
}
