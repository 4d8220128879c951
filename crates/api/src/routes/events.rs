//! `GET /v1/events`: lifecycle events as Server-Sent Events — the recorded ones after `since`
//! first (when given), then each new one as it happens. Each message has `id:` = the event's
//! `seq` (pass it back as `since` to resume) and `event: state`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::Stream;
use sbx_lifecycle::model::Event;
use sbx_lifecycle::{Caller, Service};
use sbx_protocol::ErrorBody;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Replay recorded events with a larger `seq` first (default: only new events).
    since: Option<i64>,
    /// Only this sandbox's events (its id).
    sandbox: Option<String>,
}

#[utoipa::path(get, path = "/v1/events", tag = "daemon",
    params(EventsQuery),
    responses(
        (status = 200, description = "A `text/event-stream` of lifecycle events (JSON `Event` in each `data:`)",
            content_type = "text/event-stream", body = sbx_protocol::Event),
        (status = 400, description = "Invalid query", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Auth(caller): Auth,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let service = state.service.clone();
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = service.subscribe();
    let closing = service.closing();
    let ended = service.access().credential_ended(&caller);
    let mut feed = Feed {
        service,
        caller,
        sandbox: query.sandbox,
        backlog: VecDeque::new(),
        last: 0,
        live,
        closing,
        ended,
    };
    match query.since {
        Some(since) => {
            feed.last = since;
            feed.refill()?;
        }
        None => feed.last = feed.service.last_event()?,
    }
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        let message = SseEvent::default()
            .id(event.seq.to_string())
            .event("state")
            .json_data(wire::event(&event))
            .unwrap_or_default();
        Some((Ok(message), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Feed {
    service: Service,
    /// Sees only the events of the sandboxes it may see.
    caller: Caller,
    sandbox: Option<String>,
    backlog: VecDeque<Event>,
    /// The last `seq` sent (or skipped as before the start).
    last: i64,
    live: tokio::sync::broadcast::Receiver<Event>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// Turns true when the caller's key is revoked or its session ends: the feed ends.
    ended: tokio::sync::watch::Receiver<bool>,
}

impl Feed {
    /// Loads recorded events after `last` (all pages).
    fn refill(&mut self) -> Result<(), sbx_lifecycle::Error> {
        loop {
            let page = self.service.events_since(
                &self.caller,
                self.last_queued(),
                self.sandbox.as_deref(),
            )?;
            let full = page.len() as i64 >= sbx_lifecycle::EVENT_PAGE;
            self.backlog.extend(page);
            if !full {
                return Ok(());
            }
        }
    }

    fn last_queued(&self) -> i64 {
        self.backlog.back().map_or(self.last, |e| e.seq)
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.last = event.seq;
                return Some(event);
            }
            if *self.closing.borrow() || *self.ended.borrow() {
                return None;
            }
            let received = tokio::select! {
                received = self.live.recv() => received,
                _ = self.closing.changed() => return None,
                _ = async { self.ended.wait_for(|ended| *ended).await.map(|_| ()) } => return None,
            };
            match received {
                Ok(event) if event.seq > self.last && self.wanted(&event) => {
                    self.last = event.seq;
                    return Some(event);
                }
                Ok(_) => {}
                // Fell behind the channel: catch up from the store.
                Err(RecvError::Lagged(_)) => {
                    if self.refill().is_err() {
                        return None;
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn wanted(&self, event: &Event) -> bool {
        self.sandbox
            .as_ref()
            .is_none_or(|id| &event.sandbox_id == id)
            && self.service.may_see_event(&self.caller, event)
    }
}
