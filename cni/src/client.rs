//! Blocking unix-socket client for the agent protocol (the plugin needs no async runtime).

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{CniError, ErrorCode};
use crate::protocol::{AgentRequest, AgentResponse, FrameError, read_frame, write_frame};
use crate::result::CniResult;

/// Something that answers agent requests: the real socket, or an in-process agent in tests.
pub trait Agent {
    fn call(&self, req: &AgentRequest) -> Result<Option<CniResult>, CniError>;
}

/// The agent behind a unix socket.
#[derive(Clone, Debug)]
pub struct UnixAgent {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl UnixAgent {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> UnixAgent {
        UnixAgent {
            socket: socket.into(),
            timeout,
        }
    }

    fn unreachable(&self, e: &std::io::Error) -> CniError {
        CniError::try_again_later(format!(
            "the hybridnet agent is not reachable at {}: {e}; is hybridnet-node running on this node?",
            self.socket.display()
        ))
    }
}

impl Agent for UnixAgent {
    fn call(&self, req: &AgentRequest) -> Result<Option<CniResult>, CniError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(&e))?;
        s.set_read_timeout(Some(self.timeout))
            .and_then(|_| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| CniError::io(format!("agent socket {}: {e}", self.socket.display())))?;
        let body = serde_json::to_vec(req).map_err(|e| {
            CniError::new(ErrorCode::AgentProtocol, format!("encoding request: {e}"))
        })?;
        write_frame(&mut s, &body).map_err(|e| self.frame_error("sending the request", e))?;
        let reply = read_frame(&mut s).map_err(|e| self.frame_error("reading the answer", e))?;
        let resp: AgentResponse = serde_json::from_slice(&reply).map_err(|e| {
            CniError::new(
                ErrorCode::AgentProtocol,
                format!("the hybridnet agent's answer is not understood: {e}"),
            )
        })?;
        resp.into_outcome()
    }
}

impl UnixAgent {
    fn frame_error(&self, what: &str, e: FrameError) -> CniError {
        match e {
            FrameError::Io(io)
                if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                CniError::try_again_later(format!(
                    "the hybridnet agent at {} did not answer within {} s ({what})",
                    self.socket.display(),
                    self.timeout.as_secs()
                ))
            }
            FrameError::Io(io) => CniError::io(format!(
                "agent socket {} ({what}): {io}",
                self.socket.display()
            )),
            other => CniError::new(
                ErrorCode::AgentProtocol,
                format!("agent socket {} ({what}): {other}", self.socket.display()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentCommand, PROTOCOL_VERSION};
    use std::os::unix::net::UnixListener;

    fn status() -> AgentRequest {
        AgentRequest {
            version: PROTOCOL_VERSION,
            command: AgentCommand::Status,
            container_id: None,
            netns: None,
            ifname: None,
            pod: None,
            valid_attachments: vec![],
        }
    }

    #[test]
    fn missing_socket_is_try_again_later_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.sock");
        let e = UnixAgent::new(&p, Duration::from_secs(1))
            .call(&status())
            .unwrap_err();
        assert_eq!(e.code, 11);
        assert!(e.msg.contains("nope.sock"), "{e}");
    }

    #[test]
    fn silent_agent_times_out_and_garbage_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sock");
        let l = UnixListener::bind(&p).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // First connection: read the request and say nothing until the client gave up.
            let (mut c, _) = l.accept().unwrap();
            let _ = read_frame(&mut c);
            done_rx.recv().unwrap();
            drop(c);
            // Second: answer with a frame that is not JSON.
            let (mut c, _) = l.accept().unwrap();
            let _ = read_frame(&mut c);
            write_frame(&mut c, b"nonsense").unwrap();
        });
        let agent = UnixAgent::new(&p, Duration::from_millis(300));
        assert_eq!(agent.call(&status()).unwrap_err().code, 11);
        done_tx.send(()).unwrap();
        assert_eq!(agent.call(&status()).unwrap_err().code, 103);
        t.join().unwrap();
    }
}
