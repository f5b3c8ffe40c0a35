//! The reconnecting event stream over server-sent events (decoded by `eventsource-stream`).

use eventsource_stream::{Event as SseMessage, EventStreamError, Eventsource as _};
use futures::{StreamExt, stream::BoxStream};
use leviathan_core::{
    Event,
    retry::{FullJitter, RetryPolicy, retry_with},
};

use super::{ClientError, ControlPlaneClient};
use crate::{code::ErrorCode, wire::ErrorBody};

/// Events from a control plane, in `seq` order.
pub type ClientEventStream = BoxStream<'static, Result<Event, ClientError>>;

/// The messages of one open response.
type Messages = BoxStream<'static, Result<SseMessage, EventStreamError<reqwest::Error>>>;

/// The decoded messages of `response`'s body.
fn messages(response: reqwest::Response) -> Messages {
    response.bytes_stream().eventsource().boxed()
}

struct Follow {
    client: ControlPlaneClient,
    last_seq: u64,
    body: Option<Messages>,
    /// The sleeps of the reconnections since the last delivered event (`None`: none yet).
    backoff: Option<FullJitter>,
    done: bool,
}

enum Step {
    /// Boxed: an event is large next to the other steps.
    Yield(Box<Result<Event, ClientError>>),
    Reconnect(String),
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
        body: Some(messages(response)),
        backoff: None,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.read().await {
                Step::Yield(item) => {
                    let item = *item;
                    if item.is_err() {
                        st.done = true;
                    }
                    return Some((item, st));
                }
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
        if !message.id.is_empty() && message.id != event.seq.to_string() {
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
            Ok(Some(Ok(message))) => self.handle(message),
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
                self.body = Some(messages(response));
                Ok(())
            }
            Err(error) if error.is_transient() => Err(gave_up(self.last_seq, &error)),
            Err(error) => Err(error),
        }
    }
}
