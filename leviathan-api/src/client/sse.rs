//! Server-sent events: a decoder for the wire format and the reconnecting event stream.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use leviathan_core::{
    Event,
    retry::{FullJitter, RetryPolicy, retry_with},
};

use super::{ClientError, ControlPlaneClient};
use crate::{code::ErrorCode, wire::ErrorBody};

/// Events from a control plane, in `seq` order.
pub type ClientEventStream = BoxStream<'static, Result<Event, ClientError>>;

/// One dispatched SSE message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SseMessage {
    /// The `id` field, when the message had one.
    pub(crate) id: Option<String>,
    /// The `event` field (`message` when absent).
    pub(crate) event: String,
    /// The `data` lines, joined by `\n`.
    pub(crate) data: String,
}

/// Decodes the `text/event-stream` format incrementally (lines end with `\n` or `\r\n`;
/// comments, used for keep-alives, are skipped).
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    line: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the messages completed by them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(message) = self.line_done(&String::from_utf8_lossy(&line)) {
                    out.push(message);
                }
            } else {
                self.line.push(b);
            }
        }
        out
    }

    fn line_done(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            let id = self.id.take();
            return data.map(|data| SseMessage {
                id,
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

struct Follow {
    client: ControlPlaneClient,
    last_seq: u64,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    decoder: SseDecoder,
    pending: VecDeque<SseMessage>,
    /// The sleeps of the reconnections since the last delivered event (`None`: none yet).
    backoff: Option<FullJitter>,
    done: bool,
}

enum Step {
    /// Boxed: an event is large next to the other steps.
    Yield(Box<Result<Event, ClientError>>),
    Reconnect(String),
    Continue,
}

/// The reconnecting stream over a first, already open response.
pub(super) fn follow(
    client: ControlPlaneClient,
    after: u64,
    response: reqwest::Response,
) -> ClientEventStream {
    let state = Follow {
        client,
        last_seq: after,
        body: Some(response.bytes_stream().boxed()),
        decoder: SseDecoder::default(),
        pending: VecDeque::new(),
        backoff: None,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let step = match st.pending.pop_front() {
                Some(message) => st.handle(message),
                None => st.read().await,
            };
            match step {
                Step::Yield(item) => {
                    let item = *item;
                    if item.is_err() {
                        st.done = true;
                    }
                    return Some((item, st));
                }
                Step::Continue => {}
                Step::Reconnect(why) => {
                    if let Err(error) = st.reconnect(&why).await {
                        st.done = true;
                        return Some((Err(error), st));
                    }
                }
            }
        }
    })
    .boxed()
}

impl Follow {
    fn handle(&mut self, message: SseMessage) -> Step {
        if message.event == "error" {
            let error = match serde_json::from_str::<ErrorBody>(&message.data) {
                Ok(ErrorBody { error }) => error,
                Err(e) => {
                    return Step::Yield(Box::new(Err(ClientError::Stream {
                        reason: format!("undecodable error event: {e}"),
                    })));
                }
            };
            if error.code == ErrorCode::StoreUnavailable {
                return Step::Reconnect(error.message);
            }
            return Step::Yield(Box::new(Err(ClientError::Stream {
                reason: format!(
                    "the server ended the stream: {} ({})",
                    error.message, error.code
                ),
            })));
        }
        let event: Event = match serde_json::from_str(&message.data) {
            Ok(event) => event,
            Err(e) => {
                return Step::Yield(Box::new(Err(ClientError::Stream {
                    reason: format!("undecodable event after seq {}: {e}", self.last_seq),
                })));
            }
        };
        if message
            .id
            .as_deref()
            .is_some_and(|id| id != event.seq.to_string())
        {
            return Step::Yield(Box::new(Err(ClientError::Stream {
                reason: format!(
                    "event seq {} arrived with SSE id {:?}",
                    event.seq, message.id
                ),
            })));
        }
        if event.seq != self.last_seq + 1 {
            return Step::Yield(Box::new(Err(ClientError::Stream {
                reason: format!(
                    "expected seq {} next, received seq {}",
                    self.last_seq + 1,
                    event.seq
                ),
            })));
        }
        self.last_seq = event.seq;
        self.backoff = None;
        Step::Yield(Box::new(Ok(event)))
    }

    async fn read(&mut self) -> Step {
        let Some(body) = &mut self.body else {
            return Step::Reconnect("not connected".into());
        };
        let idle = self.client.stream_idle_timeout;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(bytes))) => {
                self.pending.extend(self.decoder.push(&bytes));
                Step::Continue
            }
            Ok(Some(Err(error))) => Step::Reconnect(format!("the connection broke: {error}")),
            Ok(None) => Step::Reconnect("the server closed the stream".into()),
            Err(_) => Step::Reconnect(format!("nothing received for {} s", idle.as_secs())),
        }
    }

    /// Reopens the stream after the last delivered event, with the client's retry policy; its
    /// tries count from the last delivered event, so a server that keeps dropping the stream
    /// before sending anything is given up on.
    async fn reconnect(&mut self, why: &str) -> Result<(), ClientError> {
        self.body = None;
        self.decoder = SseDecoder::default();
        self.pending.clear();
        let policy = self.client.retry;
        // At least one reconnection, whatever the policy says about ordinary calls.
        let backoff = self.backoff.get_or_insert_with(|| {
            RetryPolicy {
                max_attempts: policy.max_attempts.max(2),
                ..policy
            }
            .backoff()
        });
        let gave_up = |last_seq: u64, error: &dyn std::fmt::Display| ClientError::Stream {
            reason: format!("gave up reconnecting after seq {last_seq}: {error}"),
        };
        // The dropped stream was a failed try: sleep before the first reconnection too.
        let Some(pause) = backoff.next() else {
            return Err(gave_up(self.last_seq, &why));
        };
        tracing::debug!(
            last_seq = self.last_seq,
            why,
            delay_ms = pause.as_millis() as u64,
            "event stream reconnecting"
        );
        tokio::time::sleep(pause).await;
        let call = self.client.stream_call(self.last_seq);
        let client = &self.client;
        let connect = || client.send_once(&call);
        match retry_with(backoff, "event stream", connect, ClientError::verdict).await {
            Ok(response) => {
                self.body = Some(response.bytes_stream().boxed());
                Ok(())
            }
            Err(error) if error.is_transient() => Err(gave_up(self.last_seq, &error)),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_messages_across_chunk_boundaries() {
        let mut decoder = SseDecoder::default();
        let wire = b": keep-alive\n\nid: 1\ndata: {\"a\":\ndata: 1}\n\nevent: error\r\ndata: x\r\n\r\nid: 3\n";
        let mut messages = Vec::new();
        for chunk in wire.chunks(3) {
            messages.extend(decoder.push(chunk));
        }
        assert_eq!(
            messages,
            vec![
                SseMessage {
                    id: Some("1".into()),
                    event: "message".into(),
                    data: "{\"a\":\n1}".into(),
                },
                SseMessage {
                    id: None,
                    event: "error".into(),
                    data: "x".into(),
                },
            ]
        );
        // The last message is incomplete until its blank line arrives.
        assert_eq!(decoder.push(b"data: y\n\n").len(), 1);
    }
}
