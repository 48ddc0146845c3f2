//! QueryService: time travel — history, the state at a version or a moment, diffs between
//! versions, and one field's timeline.

use std::time::SystemTime;

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;

use crate::client::Client;
use crate::error::Result;
use crate::json::struct_to_json;
use crate::model::{Comparison, Event, Page, StateAt, TimelinePoint, events, time};
use crate::options::{CallOptions, call_options};

/// Options of [`Client::get_history`]: paging and filters, each unset by default (all events,
/// oldest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetHistoryOptions {
    page_size: i32,
    page_token: String,
    from_version: Option<i64>,
    to_version: Option<i64>,
    start_time: Option<SystemTime>,
    end_time: Option<SystemTime>,
    event_types: Vec<String>,
    descending: bool,
    call: CallOptions,
}

impl GetHistoryOptions {
    /// Most events on the page (1 to 1000). Default: the server's, 100.
    pub fn page_size(mut self, size: i32) -> Self {
        self.page_size = size;
        self
    }

    /// Where the page starts: the previous page's [`Page::next_page_token`]. Default: the first
    /// page.
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.page_token = token.into();
        self
    }

    /// Only versions at or after this one. Default: from version 1.
    pub fn from_version(mut self, version: i64) -> Self {
        self.from_version = Some(version);
        self
    }

    /// Only versions at or before this one. Default: up to the current version.
    pub fn to_version(mut self, version: i64) -> Self {
        self.to_version = Some(version);
        self
    }

    /// Only events recorded at or after this moment. Default: no lower bound.
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start_time = Some(at);
        self
    }

    /// Only events recorded at or before this moment. Default: no upper bound.
    pub fn end_time(mut self, at: SystemTime) -> Self {
        self.end_time = Some(at);
        self
    }

    /// Only events of these types. Default: every type.
    pub fn event_types<I, S>(mut self, event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = event_types.into_iter().map(Into::into).collect();
        self
    }

    /// Newest first when true. Default: false (oldest first).
    pub fn descending(mut self, descending: bool) -> Self {
        self.descending = descending;
        self
    }
}
call_options!(GetHistoryOptions);

/// Options of [`Client::get_state_at_version`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetStateAtVersionOptions {
    call: CallOptions,
}
call_options!(GetStateAtVersionOptions);

/// Options of [`Client::get_state_at_time`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetStateAtTimeOptions {
    axis: TimeAxis,
    call: CallOptions,
}

impl GetStateAtTimeOptions {
    /// Which time the moment is. Default: [`TimeAxis::RecordedAt`].
    pub fn axis(mut self, axis: TimeAxis) -> Self {
        self.axis = axis;
        self
    }
}
call_options!(GetStateAtTimeOptions);

/// The time axis of [`Client::get_state_at_time`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeAxis {
    /// What the server knew at the moment: the state after the last event recorded at or before
    /// it (the default).
    #[default]
    RecordedAt,
    /// What was true at the moment in business time, as known now: the events whose
    /// `occurred_at` is at or before it, folded in business-time order.
    OccurredAt,
    /// What was true at the moment in business time as the server knew it at this recorded
    /// time.
    Both {
        /// The recorded time.
        known_at: SystemTime,
    },
}

/// Options of [`Client::compare_versions`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompareVersionsOptions {
    call: CallOptions,
}
call_options!(CompareVersionsOptions);

/// Options of [`Client::get_field_timeline`] and [`Client::get_field_timeline_page`]: paging
/// and filters, each unset by default (the whole history, from the first page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetFieldTimelineOptions {
    page_size: i32,
    page_token: String,
    from_version: Option<i64>,
    to_version: Option<i64>,
    start_time: Option<SystemTime>,
    end_time: Option<SystemTime>,
    call: CallOptions,
}

impl GetFieldTimelineOptions {
    /// Most points on a page (1 to 1000). Default: the server's, 100. A page may hold fewer,
    /// even none, and still have a next page: the server also bounds the versions one page
    /// examines and the bytes it sends.
    pub fn page_size(mut self, size: i32) -> Self {
        self.page_size = size;
        self
    }

    /// Where the page starts: the previous page's [`Page::next_page_token`], with the same
    /// filters. Default: the first page.
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.page_token = token.into();
        self
    }

    /// Only versions at or after this one. Default: from version 1.
    pub fn from_version(mut self, version: i64) -> Self {
        self.from_version = Some(version);
        self
    }

    /// Only versions at or before this one. Default: up to the current version.
    pub fn to_version(mut self, version: i64) -> Self {
        self.to_version = Some(version);
        self
    }

    /// Only versions recorded at or after this moment. Default: no lower bound.
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start_time = Some(at);
        self
    }

    /// Only versions recorded at or before this moment. Default: no upper bound.
    pub fn end_time(mut self, at: SystemTime) -> Self {
        self.end_time = Some(at);
        self
    }
}
call_options!(GetFieldTimelineOptions);

impl Client {
    /// One page of an instance's events, in version order (or newest first), filtered by the
    /// options.
    ///
    /// ```no_run
    /// use temporal_state_client::GetHistoryOptions;
    ///
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// let page = client
    ///     .get_history(&id, &GetHistoryOptions::default().event_types(["ScoreIncreased"]).descending(true))
    ///     .await?;
    /// for e in page.items {
    ///     println!("v{} {}: {}", e.version, e.event_type, e.payload);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_history(
        &self,
        instance_id: &str,
        options: &GetHistoryOptions,
    ) -> Result<Page<Event>> {
        let request = pb::GetHistoryRequest {
            instance_id: instance_id.to_string(),
            page_size: options.page_size,
            page_token: options.page_token.clone(),
            from_version: options.from_version,
            to_version: options.to_version,
            start_time: options.start_time.map(Into::into),
            end_time: options.end_time.map(Into::into),
            event_types: options.event_types.clone(),
            descending: options.descending,
        };
        let r = self
            .unary("GetHistory", &options.call, request, |t, r| async move {
                QueryServiceClient::new(t).get_history(r).await
            })
            .await
            .0?;
        Ok(Page::new(events(r.events)?, r.next_page_token))
    }

    /// The state right after `version` (1 is the initial state).
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a version outside 1 to the
    /// current version.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// let first = client.get_state_at_version(&id, 1, &Default::default()).await?;
    /// println!("born as {}", first.state);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_state_at_version(
        &self,
        instance_id: &str,
        version: i64,
        options: &GetStateAtVersionOptions,
    ) -> Result<StateAt> {
        let request = pb::GetStateAtVersionRequest {
            instance_id: instance_id.to_string(),
            version,
        };
        let r = self
            .unary(
                "GetStateAtVersion",
                &options.call,
                request,
                |t, r| async move { QueryServiceClient::new(t).get_state_at_version(r).await },
            )
            .await
            .0?;
        Ok(StateAt {
            recorded_at: time("recorded_at", r.recorded_at)?,
            state: struct_to_json(r.state),
            version: r.version,
            occurred_at: None,
        })
    }

    /// The state as the server knew it at a moment: after the last event recorded at or before
    /// `at`. [`Error::NotFound`](crate::Error::NotFound) for a moment before the instance existed.
    /// With [`GetStateAtTimeOptions::axis`], the state at a business time instead (as known now,
    /// or as known at a recorded time): see [`TimeAxis`].
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    ///
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    /// let then = client.get_state_at_time(&id, an_hour_ago, &Default::default()).await?;
    /// println!("an hour ago (v{}): {}", then.version, then.state);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_state_at_time(
        &self,
        instance_id: &str,
        at: SystemTime,
        options: &GetStateAtTimeOptions,
    ) -> Result<StateAt> {
        let (axis, known_at) = match options.axis {
            TimeAxis::RecordedAt => (pb::TimeAxis::RecordedAt, None),
            TimeAxis::OccurredAt => (pb::TimeAxis::OccurredAt, None),
            TimeAxis::Both { known_at } => (pb::TimeAxis::Both, Some(known_at.into())),
        };
        let request = pb::GetStateAtTimeRequest {
            instance_id: instance_id.to_string(),
            timestamp: Some(at.into()),
            axis: axis as i32,
            known_at,
        };
        let r = self
            .unary(
                "GetStateAtTime",
                &options.call,
                request,
                |t, r| async move { QueryServiceClient::new(t).get_state_at_time(r).await },
            )
            .await
            .0?;
        Ok(StateAt {
            recorded_at: time("recorded_at", r.recorded_at)?,
            state: struct_to_json(r.state),
            version: r.version,
            occurred_at: r
                .occurred_at
                .map(|t| time("occurred_at", Some(t)))
                .transpose()?,
        })
    }

    /// Both states, the RFC 6902 patch from the first to the second, and every changed leaf.
    /// `version1` may be greater than `version2`.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// let diff = client.compare_versions(&id, 1, 2, &Default::default()).await?;
    /// for change in diff.changes {
    ///     println!("{} {:?}: {:?} -> {:?}", change.path, change.kind, change.old_value, change.new_value);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn compare_versions(
        &self,
        instance_id: &str,
        version1: i64,
        version2: i64,
        options: &CompareVersionsOptions,
    ) -> Result<Comparison> {
        let request = pb::CompareVersionsRequest {
            instance_id: instance_id.to_string(),
            version1,
            version2,
        };
        let r = self
            .unary(
                "CompareVersions",
                &options.call,
                request,
                |t, r| async move { QueryServiceClient::new(t).compare_versions(r).await },
            )
            .await
            .0?;
        Ok(r.into())
    }

    /// Each version at which one field's value changed: every page, from the options' page
    /// token (the first page by default) to the last. `field` is a JSON pointer (`/score`) or a
    /// dotted path (`stats.level`). For a long history, [`Client::get_field_timeline_page`]
    /// reads one page at a time instead.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// for point in client.get_field_timeline(&id, "/score", &Default::default()).await? {
    ///     println!("v{}: {:?}", point.version, point.value);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_field_timeline(
        &self,
        instance_id: &str,
        field: &str,
        options: &GetFieldTimelineOptions,
    ) -> Result<Vec<TimelinePoint>> {
        let mut options = options.clone();
        let mut points = Vec::new();
        loop {
            let page = self
                .get_field_timeline_page(instance_id, field, &options)
                .await?;
            points.extend(page.items);
            match page.next_page_token {
                Some(token) => options.page_token = token,
                None => return Ok(points),
            }
        }
    }

    /// One page of a field's timeline: the versions at which its value changed, in version
    /// order, and the token of the next page (`None` on the last). The server starts from the
    /// state just before the range (a snapshot plus a few events), so a page deep into a long
    /// history costs no more than the first.
    ///
    /// ```no_run
    /// use temporal_state_client::GetFieldTimelineOptions;
    ///
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// let mut options = GetFieldTimelineOptions::default().from_version(10_000).page_size(50);
    /// loop {
    ///     let page = client.get_field_timeline_page(&id, "/score", &options).await?;
    ///     for point in &page.items {
    ///         println!("v{}: {:?}", point.version, point.value);
    ///     }
    ///     let Some(token) = page.next_page_token else { break };
    ///     options = options.page_token(token);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_field_timeline_page(
        &self,
        instance_id: &str,
        field: &str,
        options: &GetFieldTimelineOptions,
    ) -> Result<Page<TimelinePoint>> {
        let request = pb::GetFieldTimelineRequest {
            instance_id: instance_id.to_string(),
            field: field.to_string(),
            from_version: options.from_version,
            to_version: options.to_version,
            start_time: options.start_time.map(Into::into),
            end_time: options.end_time.map(Into::into),
            page_size: options.page_size,
            page_token: options.page_token.clone(),
        };
        let r = self
            .unary(
                "GetFieldTimeline",
                &options.call,
                request,
                |t, r| async move { QueryServiceClient::new(t).get_field_timeline(r).await },
            )
            .await
            .0?;
        let points = r
            .points
            .into_iter()
            .map(TimelinePoint::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::new(points, r.next_page_token))
    }
}
