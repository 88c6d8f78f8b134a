//! `POST /services/data/vXX.X/actions/standard/customNotificationAction`: the custom
//! notification invocable action. Each input is checked the way Salesforce checks it —
//! `customNotifTypeId` must name a notification type of the org
//! ([`SimulatorConfig::notification_type_ids`](super::SimulatorConfig)), `recipientIds` 1 to
//! 500 ids, `title` (≤ 250 characters) and `body` (≤ 750) present, a `targetId` or a
//! `targetPageRef` — and answered one result per input:
//! `{"actionName":"customNotificationAction","errors":null,"isSuccess":true,"outputValues":{"SuccessMessage":…}}`,
//! or `isSuccess: false` with `errors: [{"statusCode","message","fields"}]`. The answer is 200
//! when every input succeeded, 400 otherwise. Accepted notifications are recorded
//! ([`Simulator::notifications`](super::Simulator::notifications)).
//! `GET` on the same path describes the action's inputs.

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value as Json, json};

use super::{Shared, State, error, json_response};

pub const ACTION: &str = "customNotificationAction";

/// A notification the simulated org accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentNotification {
    pub custom_notif_type_id: String,
    pub recipient_ids: Vec<String>,
    pub title: String,
    pub body: String,
    pub target_id: Option<String>,
    pub target_page_ref: Option<String>,
}

fn is_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn failed(code: &str, message: String, fields: &[&str]) -> Json {
    json!({
        "actionName": ACTION,
        "errors": [{"statusCode": code, "message": message, "fields": fields}],
        "isSuccess": false,
        "outputValues": null,
    })
}

fn text(input: &Json, field: &str) -> Option<String> {
    input.get(field).and_then(Json::as_str).map(str::to_owned)
}

fn check(shared: &Shared, input: &Json) -> Result<SentNotification, Json> {
    let Some(type_id) = text(input, "customNotifTypeId").filter(|t| !t.is_empty()) else {
        return Err(failed(
            "REQUIRED_FIELD_MISSING",
            "Missing required input parameter: customNotifTypeId".into(),
            &["customNotifTypeId"],
        ));
    };
    // An id is matched on its first 15 characters (the 18-character form adds a checksum).
    let known = shared
        .config
        .notification_type_ids
        .iter()
        .any(|k| k.get(..15) == type_id.get(..15) && is_id(&type_id));
    if !known {
        return Err(failed(
            "INVALID_PARAMETER_VALUE",
            format!("Invalid parameter value \"{type_id}\" for parameter \"customNotifTypeId\""),
            &["customNotifTypeId"],
        ));
    }
    let recipients: Vec<String> = match input.get("recipientIds") {
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Json::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    if recipients.is_empty() {
        return Err(failed(
            "REQUIRED_FIELD_MISSING",
            "Missing required input parameter: recipientIds".into(),
            &["recipientIds"],
        ));
    }
    if recipients.len() > 500 {
        return Err(failed(
            "LIMIT_EXCEEDED",
            "You can't send a custom notification to more than 500 recipients.".into(),
            &["recipientIds"],
        ));
    }
    if let Some(bad) = recipients.iter().find(|r| !is_id(r)) {
        return Err(failed(
            "INVALID_PARAMETER_VALUE",
            format!("Invalid parameter value \"{bad}\" for parameter \"recipientIds\""),
            &["recipientIds"],
        ));
    }
    let mut fields = Vec::new();
    for (name, max) in [("title", 250usize), ("body", 750)] {
        let value = text(input, name).unwrap_or_default();
        if value.trim().is_empty() {
            return Err(failed(
                "REQUIRED_FIELD_MISSING",
                format!("Missing required input parameter: {name}"),
                &[name],
            ));
        }
        if value.chars().count() > max {
            return Err(failed(
                "STRING_TOO_LONG",
                format!("{name}: data value too large (max length={max})"),
                &[name],
            ));
        }
        fields.push(value);
    }
    let target_id = text(input, "targetId").filter(|t| !t.is_empty());
    let target_page_ref = input
        .get("targetPageRef")
        .filter(|v| !v.is_null())
        .map(|v| v.to_string());
    if target_id.is_none() && target_page_ref.is_none() {
        return Err(failed(
            "REQUIRED_FIELD_MISSING",
            "You must specify either a targetId or a targetPageRef.".into(),
            &["targetId"],
        ));
    }
    if let Some(t) = target_id.as_deref().filter(|t| !is_id(t)) {
        return Err(failed(
            "INVALID_PARAMETER_VALUE",
            format!("Invalid parameter value \"{t}\" for parameter \"targetId\""),
            &["targetId"],
        ));
    }
    let body = fields.pop().unwrap_or_default();
    let title = fields.pop().unwrap_or_default();
    Ok(SentNotification {
        custom_notif_type_id: type_id,
        recipient_ids: recipients,
        title,
        body,
        target_id,
        target_page_ref,
    })
}

pub(super) fn route(shared: &Shared, state: &mut State, method: &Method, body: &[u8]) -> Response {
    if *method == Method::GET {
        return json_response(
            200,
            &json!({
                "actions": [{
                    "name": ACTION,
                    "label": "Send Custom Notification",
                    "type": "CUSTOM_NOTIFICATION_ACTION",
                    "inputs": [
                        {"name": "customNotifTypeId", "type": "REFERENCE", "required": true},
                        {"name": "recipientIds", "type": "REFERENCE", "required": true, "maxOccurs": 500},
                        {"name": "senderId", "type": "REFERENCE", "required": false},
                        {"name": "title", "type": "STRING", "required": true, "maxLength": 250},
                        {"name": "body", "type": "TEXTAREA", "required": true, "maxLength": 750},
                        {"name": "targetId", "type": "REFERENCE", "required": false},
                        {"name": "targetPageRef", "type": "STRING", "required": false},
                    ],
                }],
            }),
        );
    }
    if *method != Method::POST {
        return error(405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed");
    }
    let request: Json = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(400, "JSON_PARSER_ERROR", &e.to_string()),
    };
    let Some(inputs) = request.get("inputs").and_then(Json::as_array) else {
        return error(
            400,
            "INVALID_INPUT",
            "The request body must contain an \"inputs\" array",
        );
    };
    let mut all_ok = true;
    let results: Vec<Json> = inputs
        .iter()
        .map(|input| match check(shared, input) {
            Ok(n) => {
                state.notifications.push(n);
                json!({
                    "actionName": ACTION,
                    "errors": null,
                    "isSuccess": true,
                    "outputValues": {"SuccessMessage": "Your custom notification is processed successfully."},
                })
            }
            Err(e) => {
                all_ok = false;
                e
            }
        })
        .collect();
    json_response(if all_ok { 200 } else { 400 }, &results)
}

#[cfg(test)]
mod tests {
    use super::super::{SIM_NOTIFICATION_TYPE_ID, Simulator, SimulatorConfig};
    use crate::salesforce::notifications::{CustomNotification, NO_TARGET_ID};
    use crate::salesforce::{ClientConfig, Credentials, SalesforceClient, SalesforceError};
    use serde_json::{Value as Json, json};

    async fn token(sim: &Simulator, http: &reqwest::Client) -> String {
        let c = sim.config();
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            c.client_id, c.client_secret
        );
        let v: Json = http
            .post(format!("{}/services/oauth2/token", sim.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn answers_like_the_invocable_action() {
        let sim = Simulator::start(SimulatorConfig::default()).await;
        let http = gateway::http::client();
        let token = token(&sim, &http).await;
        let url = format!(
            "{}/services/data/v62.0/actions/standard/customNotificationAction",
            sim.base_url()
        );
        let post = |body: Json| {
            http.post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        };
        let good = json!({
            "customNotifTypeId": SIM_NOTIFICATION_TYPE_ID,
            "recipientIds": ["0055g00000HumanAAA"],
            "title": "Dead job",
            "body": "job 7 failed",
            "targetId": NO_TARGET_ID,
        });
        let r = post(json!({"inputs": [good.clone()]})).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Json = r.json().await.unwrap();
        assert_eq!(
            v,
            json!([{"actionName": "customNotificationAction", "errors": null, "isSuccess": true,
                    "outputValues": {"SuccessMessage": "Your custom notification is processed successfully."}}])
        );

        // One result per input; any failure makes the answer a 400.
        let mut bad_type = good.clone();
        bad_type["customNotifTypeId"] = json!("0ML5g0000000NopAAA");
        let mut no_title = good.clone();
        no_title["title"] = json!("");
        let mut no_target = good.clone();
        no_target.as_object_mut().unwrap().remove("targetId");
        let mut long_body = good.clone();
        long_body["body"] = json!("x".repeat(751));
        let mut bad_recipient = good.clone();
        bad_recipient["recipientIds"] = json!(["ops@example.com"]);
        let r = post(
            json!({"inputs": [good, bad_type, no_title, no_target, long_body, bad_recipient]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let v: Json = r.json().await.unwrap();
        let codes: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["errors"][0]["statusCode"]
                    .as_str()
                    .unwrap_or(if r["isSuccess"] == json!(true) {
                        "ok"
                    } else {
                        "?"
                    })
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                "ok",
                "INVALID_PARAMETER_VALUE",
                "REQUIRED_FIELD_MISSING",
                "REQUIRED_FIELD_MISSING",
                "STRING_TOO_LONG",
                "INVALID_PARAMETER_VALUE"
            ]
        );
        assert_eq!(v[1]["errors"][0]["fields"], json!(["customNotifTypeId"]));
        assert_eq!(sim.notifications().len(), 2, "the good inputs are recorded");
        let r = post(json!({"nope": []})).await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(
            sim.calls_to("POST /actions/standard/customNotificationAction"),
            3
        );

        // The client: Ok, then the refusal as an Api error with Salesforce's code.
        let client = SalesforceClient::new(
            ClientConfig::new(sim.base_url()),
            Credentials::client_credentials(&sim.config().client_id, &sim.config().client_secret),
        )
        .unwrap();
        let mut n = CustomNotification {
            custom_notif_type_id: SIM_NOTIFICATION_TYPE_ID.into(),
            recipient_ids: vec!["0055g00000HumanAAA".into()],
            title: "t".repeat(400),
            body: "b".into(),
            target_id: NO_TARGET_ID.into(),
        }
        .truncated();
        client.send_custom_notification(&n).await.unwrap();
        assert_eq!(
            sim.notifications().last().unwrap().title.chars().count(),
            250
        );
        n.custom_notif_type_id = "0ML5g0000000NopAAA".into();
        match client.send_custom_notification(&n).await {
            Err(e @ SalesforceError::Api { status: 400, .. }) => {
                assert_eq!(e.error_code(), Some("INVALID_PARAMETER_VALUE"));
                assert!(!e.retryable());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sim.notifications().len(), 3);
    }
}
