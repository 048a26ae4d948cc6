//! The CLI's side of the local API (blocking: the CLI has no runtime).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::{Request, Response, MAX_LINE};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the tidelet agent at {path}: {source} (is `tidelet run` running with this --root-dir?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent at {path}: {message}")]
    Protocol { path: String, message: String },
    #[error("{0}")]
    Agent(String),
}

pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let path = socket.display().to_string();
    let proto = |message: String| ClientError::Protocol {
        path: path.clone(),
        message,
    };
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: path.clone(),
        source,
    })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| proto(e.to_string()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| proto(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| proto(e.to_string()))?;
    let mut out = String::new();
    BufReader::new(s.take(MAX_LINE as u64))
        .read_line(&mut out)
        .map_err(|e| proto(e.to_string()))?;
    let resp: Response =
        serde_json::from_str(&out).map_err(|e| proto(format!("bad response: {e}")))?;
    if let Response::Error { message } = resp {
        return Err(ClientError::Agent(message));
    }
    Ok(resp)
}
