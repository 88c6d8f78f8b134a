//! Salesforce Outbound Messages: the SOAP `notifications` Salesforce POSTs when a workflow rule
//! or flow fires, and the `<Ack>true</Ack>` answer it waits for. Salesforce resends a message
//! until it is acknowledged (for up to 24 hours), so each `Notification/Id` is turned into at
//! most one job (the caller enqueues with it as the dedupe key), and the answer is Ack only
//! once every notification in the message is safely queued.
//!
//! Salesforce cannot sign these messages: the caller checks the `OrganizationId` against the
//! configured org and a secret token in the endpoint URL.

use quick_xml::Reader;
use quick_xml::events::Event;

/// The acknowledgement Salesforce expects (SOAP 1.1).
pub const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#;

/// A SOAP fault, for a message we refuse (Salesforce retries it later).
pub fn fault(code: &str, message: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault><faultcode>soapenv:{}</faultcode><faultstring>{}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#,
        esc(code),
        esc(message)
    )
}

/// One outbound message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub organization_id: String,
    pub action_id: String,
    pub notifications: Vec<Notification>,
}

/// One record change in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    /// Unique per notification; Salesforce resends it with the same id.
    pub id: String,
    /// The sObject type from `xsi:type="sf:Opportunity"`.
    pub object: String,
    /// The record's fields as sent (at least `Id`).
    pub fields: Vec<(String, String)>,
}

impl Notification {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("the body is not well-formed XML: {0}")]
    Xml(String),
    #[error("not a Salesforce outbound message: {0}")]
    Shape(String),
}

fn local(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_owned(),
        None => name.to_owned(),
    }
}

/// The five predefined XML entities; character references are resolved by the caller.
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses a `notifications` SOAP message.
pub fn parse(body: &[u8]) -> Result<Message, OutboundError> {
    let mut reader = Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut msg = Message::default();
    let mut current: Option<Notification> = None;
    let mut seen_notifications = false;
    // Text of the innermost element; quick-xml reports entity references as their own events.
    let mut text = String::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| OutboundError::Xml(e.to_string()))?;
        match event {
            Event::Start(e) => {
                let name = local(e.name().as_ref());
                if name == "notifications" {
                    seen_notifications = true;
                }
                if name == "Notification" {
                    current = Some(Notification::default());
                }
                if name == "sObject"
                    && let Some(n) = current.as_mut()
                {
                    for a in e.attributes().flatten() {
                        if local(a.key.as_ref()) == "type" {
                            n.object = local(&a.value);
                        }
                    }
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let resolved = r
                    .resolve_char_ref()
                    .map_err(|e| OutboundError::Xml(e.to_string()))?;
                let name = r.xml10_content();
                match resolved.or_else(|| entity(&name)) {
                    Some(c) => text.push(c),
                    None => return Err(OutboundError::Xml(format!("unknown entity &{name};"))),
                }
            }
            Event::End(e) => {
                let name = local(e.name().as_ref());
                let parent = path.get(path.len().saturating_sub(2)).map(String::as_str);
                let value = std::mem::take(&mut text).trim().to_owned();
                match (parent, name.as_str()) {
                    (Some("notifications"), "OrganizationId") => msg.organization_id = value,
                    (Some("notifications"), "ActionId") => msg.action_id = value,
                    (Some("Notification"), "Id") => {
                        if let Some(n) = current.as_mut() {
                            n.id = value;
                        }
                    }
                    (Some("sObject"), field) => {
                        if let Some(n) = current.as_mut() {
                            n.fields.push((field.to_owned(), value));
                        }
                    }
                    (_, "Notification") => {
                        if let Some(n) = current.take() {
                            if n.id.is_empty() {
                                return Err(OutboundError::Shape(
                                    "a Notification without an Id".into(),
                                ));
                            }
                            msg.notifications.push(n);
                        }
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_notifications {
        return Err(OutboundError::Shape("no notifications element".into()));
    }
    if msg.organization_id.is_empty() {
        return Err(OutboundError::Shape("no OrganizationId".into()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape Salesforce sends (Outbound Messaging, API 2005/09/outbound).
    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D5e000000ABCDEAA</OrganizationId>
   <ActionId>04k5e000000XYZ1AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/62.0/00D5e000000ABCD</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/62.0/00D5e000000ABCD</PartnerUrl>
   <Notification>
    <Id>04l5e00000A1b2cAAB</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>0065e00000Gh1JkAAJ</sf:Id>
     <sf:Name>Acme &amp; Sons renewal</sf:Name>
     <sf:StageName>Closed Won</sf:StageName>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l5e00000A1b2dAAB</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>0065e00000Gh1JlAAJ</sf:Id>
     <sf:StageName>Closed Won</sf:StageName>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

    #[test]
    fn parses_salesforce_notifications() {
        let m = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(m.organization_id, "00D5e000000ABCDEAA");
        assert_eq!(m.action_id, "04k5e000000XYZ1AAA");
        assert_eq!(m.notifications.len(), 2);
        let n = &m.notifications[0];
        assert_eq!(
            (n.id.as_str(), n.object.as_str()),
            ("04l5e00000A1b2cAAB", "Opportunity")
        );
        assert_eq!(n.field("Id"), Some("0065e00000Gh1JkAAJ"));
        assert_eq!(
            n.field("Name"),
            Some("Acme & Sons renewal"),
            "entities decoded"
        );
        assert_eq!(n.field("StageName"), Some("Closed Won"));
    }

    #[test]
    fn refuses_what_is_not_an_outbound_message() {
        assert!(matches!(parse(b"<a><b></a>"), Err(OutboundError::Xml(_))));
        assert!(matches!(
            parse(b"<Envelope><Body/></Envelope>"),
            Err(OutboundError::Shape(_))
        ));
        let no_id = SAMPLE.replace("<Id>04l5e00000A1b2cAAB</Id>", "");
        assert!(matches!(
            parse(no_id.as_bytes()),
            Err(OutboundError::Shape(_))
        ));
        assert!(ACK.contains("<Ack>true</Ack>"));
        assert!(fault("Client", "bad <token>").contains("bad &lt;token&gt;"));
    }
}
