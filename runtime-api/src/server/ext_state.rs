//! Per-extension bookkeeping for the Extensions API and the events it delivers.

use crate::protocol::Invoke;
use serde_json::json;
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// An event document for `GET /extension/event/next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtEvent {
    pub id: String,
    pub body: Vec<u8>,
}

/// Which events an extension subscribed to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscriptions {
    pub invoke: bool,
    pub shutdown: bool,
}

impl Subscriptions {
    /// Parses `{"events": ["INVOKE", "SHUTDOWN"]}`.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let events = v
            .get("events")
            .and_then(|e| e.as_array())
            .ok_or("missing \"events\" array")?;
        let mut subs = Subscriptions::default();
        for e in events {
            match e.as_str() {
                Some("INVOKE") => subs.invoke = true,
                Some("SHUTDOWN") => subs.shutdown = true,
                other => return Err(format!("unknown event type {other:?}")),
            }
        }
        Ok(subs)
    }
}

/// One registered extension.
pub struct Ext {
    pub name: String,
    pub subs: Subscriptions,
    /// Between receiving an event (or registering) and its next `event/next`: the
    /// invocation (or init) is not finished for this extension.
    pub busy: bool,
    pub waiter: Option<oneshot::Sender<ExtEvent>>,
    pub pending: VecDeque<ExtEvent>,
}

impl Ext {
    pub fn new(name: String, subs: Subscriptions) -> Self {
        Self {
            name,
            subs,
            busy: true,
            waiter: None,
            pending: VecDeque::new(),
        }
    }

    /// Hands `event` to a waiting `event/next` or queues it.
    pub fn deliver(&mut self, event: ExtEvent) {
        self.busy = true;
        let event = match self.waiter.take() {
            Some(w) => match w.send(event) {
                Ok(()) => return,
                Err(event) => event,
            },
            None => event,
        };
        self.pending.push_back(event);
    }
}

pub fn invoke_event(invoke: &Invoke) -> ExtEvent {
    let body = json!({
        "eventType": "INVOKE",
        "deadlineMs": invoke.deadline_ms,
        "requestId": invoke.request_id,
        "invokedFunctionArn": invoke.invoked_function_arn,
        "tracing": {
            "type": "X-Amzn-Trace-Id",
            "value": invoke.trace_id.clone().unwrap_or_default(),
        },
    });
    ExtEvent {
        id: invoke.request_id.clone(),
        body: body.to_string().into_bytes(),
    }
}

pub fn shutdown_event(reason: &str, deadline_ms: u64) -> ExtEvent {
    let body = json!({
        "eventType": "SHUTDOWN",
        "shutdownReason": reason,
        "deadlineMs": deadline_ms,
    });
    ExtEvent {
        id: format!("shutdown-{deadline_ms}"),
        body: body.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subscriptions() {
        assert_eq!(
            Subscriptions::parse(br#"{"events":["INVOKE","SHUTDOWN"]}"#),
            Ok(Subscriptions {
                invoke: true,
                shutdown: true
            })
        );
        assert_eq!(
            Subscriptions::parse(br#"{"events":[]}"#),
            Ok(Subscriptions::default())
        );
        assert!(Subscriptions::parse(br#"{"events":["LOGS"]}"#).is_err());
        assert!(Subscriptions::parse(b"nope").is_err());
    }
}
