//! Custom notifications: `POST /services/data/vXX.X/actions/standard/customNotificationAction`
//! (API 46.0 and later), the standard invocable action that shows a notification in the
//! Salesforce bell and the mobile app to users, groups, queues or account / opportunity teams.
//!
//! The request is `{"inputs":[{customNotifTypeId, recipientIds, title, body, targetId}]}` and
//! the answer one result per input: `[{"actionName","errors","isSuccess","outputValues"}]`,
//! `errors` being `[{"statusCode","message","fields"}]` when `isSuccess` is false (HTTP 400
//! when every input failed). A bad notification type id fails its input that way.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Body, SalesforceClient};
use super::error::SalesforceError;
use super::wire::ApiError;

/// Salesforce's limits on a custom notification.
pub const TITLE_MAX_CHARS: usize = 250;
pub const BODY_MAX_CHARS: usize = 750;
pub const RECIPIENTS_MAX: usize = 500;
/// The id to target when a notification is about no record in particular (Salesforce's own
/// advice: a dummy id, so the notification opens nothing).
pub const NO_TARGET_ID: &str = "000000000000000AAA";

/// One custom notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomNotification {
    /// The `CustomNotificationType` id (`0ML…`).
    pub custom_notif_type_id: String,
    /// Users, groups, queues, accounts or opportunities (teams); at most 500.
    pub recipient_ids: Vec<String>,
    pub title: String,
    pub body: String,
    /// The record the notification opens ([`NO_TARGET_ID`] for none).
    pub target_id: String,
}

impl CustomNotification {
    /// Cuts the title and body to Salesforce's limits (in characters, on a char boundary).
    pub fn truncated(mut self) -> CustomNotification {
        self.title = cut(&self.title, TITLE_MAX_CHARS);
        self.body = cut(&self.body, BODY_MAX_CHARS);
        self
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One input's result, as invocable actions answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    pub action_name: String,
    pub errors: Option<Vec<ApiError>>,
    pub is_success: bool,
    #[serde(default)]
    pub output_values: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ActionRequest<'a> {
    inputs: &'a [CustomNotification],
}

impl SalesforceClient {
    /// Sends one custom notification. A refused input (a bad type id, a recipient that is not
    /// a user, group, queue, account or opportunity) is [`SalesforceError::Api`] with its
    /// `statusCode`s; nothing is retried here.
    pub async fn send_custom_notification(
        &self,
        notification: &CustomNotification,
    ) -> Result<(), SalesforceError> {
        let path = format!(
            "{}/actions/standard/customNotificationAction",
            self.data_path()
        );
        let body = serde_json::to_vec(&ActionRequest {
            inputs: std::slice::from_ref(notification),
        })
        .map_err(|e| SalesforceError::Invalid(format!("request body: {e}")))?;
        let answer = self
            .send("actions", Method::POST, &path, Body::Json(body), &[])
            .await?;
        // Invocable actions answer a results array on 200 and on 400 (failed inputs); any
        // other error status carries the usual `[{"message","errorCode"}]`.
        let results: Vec<ActionResult> = match answer.json() {
            Ok(r) => r,
            Err(_) if answer.status >= 300 => return Err(answer.api_error()),
            Err(e) => return Err(e),
        };
        let Some(result) = results.into_iter().next() else {
            return Err(answer.malformed("no result for the input"));
        };
        if result.is_success && answer.status < 300 {
            return Ok(());
        }
        Err(SalesforceError::Api {
            status: answer.status,
            errors: result.errors.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_to_the_limits() {
        let n = CustomNotification {
            custom_notif_type_id: "0ML000000000001AAA".into(),
            recipient_ids: vec![],
            title: "é".repeat(300),
            body: "x".repeat(10),
            target_id: NO_TARGET_ID.into(),
        }
        .truncated();
        assert_eq!(n.title.chars().count(), TITLE_MAX_CHARS);
        assert!(n.title.ends_with('…'));
        assert_eq!(n.body, "x".repeat(10));
    }
}
