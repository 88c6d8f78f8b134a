//! The SOAP surface most X3 sites use: `CAdxWebServiceXmlCC` (rpc/encoded, Axis style).
//!
//! Requests carry a `CAdxCallContext` (`codeLang`, `poolAlias`, `poolId`, `requestConfig`),
//! the web service's `publicName` and, per operation, `objectXml` (`save`, `modify`),
//! `objectKeys` (`read`, `query`, `modify`), `listSize` (`query`) or `inputXml` (`run`).
//! Answers are a `CAdxResultXml`: `status` (1 ok, 0 failed), `messages` (type 1/2/3) and
//! `resultXml` (`<RESULT>…`, itself XML carried as a string). Both sides of the wire live
//! here: the client writes requests and reads results, the simulator the reverse.

use std::fmt::Write as _;

use super::error::X3Message;
use crate::intacct::xml::{self, Element};

/// Where Syracuse serves the generic SOAP web services.
pub const SOAP_PATH: &str = "/soap-generic/syracuse/collaboration/syracuse/CAdxWebServiceXmlCC";
pub const WSS_NS: &str = "http://www.adonix.com/WSS";
pub const SOAPENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAPENC_NS: &str = "http://schemas.xmlsoap.org/soap/encoding/";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// `CAdxCallContext`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// `ENG`, `FRA`, …
    pub code_lang: String,
    /// The pool, which selects the folder.
    pub pool_alias: String,
    pub pool_id: String,
    /// `adxwss.optreturn=XML&adxwss.beautify=false`, …
    pub request_config: String,
}

/// One `CAdxWebServiceXmlCC` operation and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SoapCall {
    Save {
        public_name: String,
        object_xml: String,
    },
    Read {
        public_name: String,
        keys: Vec<(String, String)>,
    },
    Query {
        public_name: String,
        keys: Vec<(String, String)>,
        list_size: u32,
    },
    Modify {
        public_name: String,
        keys: Vec<(String, String)>,
        object_xml: String,
    },
    Run {
        public_name: String,
        input_xml: String,
    },
}

impl SoapCall {
    /// The operation name (`save`, `read`, …).
    pub fn operation(&self) -> &'static str {
        match self {
            SoapCall::Save { .. } => "save",
            SoapCall::Read { .. } => "read",
            SoapCall::Query { .. } => "query",
            SoapCall::Modify { .. } => "modify",
            SoapCall::Run { .. } => "run",
        }
    }

    pub fn public_name(&self) -> &str {
        match self {
            SoapCall::Save { public_name, .. }
            | SoapCall::Read { public_name, .. }
            | SoapCall::Query { public_name, .. }
            | SoapCall::Modify { public_name, .. }
            | SoapCall::Run { public_name, .. } => public_name,
        }
    }
}

/// A whole request: context and call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoapRequest {
    pub context: CallContext,
    pub call: SoapCall,
}

fn typed(name: &str, xsi_type: &str, text: impl Into<String>) -> Element {
    Element::leaf(name, text).with_attr("xsi:type", xsi_type)
}

fn keys_element(keys: &[(String, String)]) -> Element {
    let mut arr = Element::new("objectKeys")
        .with_attr("xsi:type", "wss:ArrayOfCAdxParamKeyValue")
        .with_attr(
            "soapenc:arrayType",
            format!("wss:CAdxParamKeyValue[{}]", keys.len()),
        );
    for (k, v) in keys {
        arr.children.push(
            Element::new("item")
                .with_attr("xsi:type", "wss:CAdxParamKeyValue")
                .with(typed("key", "xsd:string", k.clone()))
                .with(typed("value", "xsd:string", v.clone())),
        );
    }
    arr
}

fn envelope(body_child: Element) -> Element {
    Element::new("soapenv:Envelope")
        .with_attr("xmlns:soapenv", SOAPENV_NS)
        .with_attr("xmlns:soapenc", SOAPENC_NS)
        .with_attr("xmlns:xsi", XSI_NS)
        .with_attr("xmlns:xsd", XSD_NS)
        .with_attr("xmlns:wss", WSS_NS)
        .with(Element::new("soapenv:Header"))
        .with(Element::new("soapenv:Body").with(body_child))
}

impl SoapRequest {
    /// The SOAP envelope (`encoding` is the XML declaration's, normally `UTF-8`).
    pub fn to_envelope(&self, encoding: &str) -> String {
        let ctx = &self.context;
        let mut op = Element::new(format!("wss:{}", self.call.operation()))
            .with_attr("soapenv:encodingStyle", SOAPENC_NS)
            .with(
                Element::new("callContext")
                    .with_attr("xsi:type", "wss:CAdxCallContext")
                    .with(typed("codeLang", "xsd:string", ctx.code_lang.clone()))
                    .with(typed("poolAlias", "xsd:string", ctx.pool_alias.clone()))
                    .with(typed("poolId", "xsd:string", ctx.pool_id.clone()))
                    .with(typed(
                        "requestConfig",
                        "xsd:string",
                        ctx.request_config.clone(),
                    )),
            )
            .with(typed(
                "publicName",
                "xsd:string",
                self.call.public_name().to_owned(),
            ));
        match &self.call {
            SoapCall::Save { object_xml, .. } => {
                op.children
                    .push(typed("objectXml", "xsd:string", object_xml.clone()));
            }
            SoapCall::Read { keys, .. } => op.children.push(keys_element(keys)),
            SoapCall::Query {
                keys, list_size, ..
            } => {
                op.children.push(keys_element(keys));
                op.children
                    .push(typed("listSize", "xsd:int", list_size.to_string()));
            }
            SoapCall::Modify {
                keys, object_xml, ..
            } => {
                op.children.push(keys_element(keys));
                op.children
                    .push(typed("objectXml", "xsd:string", object_xml.clone()));
            }
            SoapCall::Run { input_xml, .. } => {
                op.children
                    .push(typed("inputXml", "xsd:string", input_xml.clone()));
            }
        }
        let mut out = String::new();
        let _ = write!(out, "<?xml version=\"1.0\" encoding=\"{encoding}\"?>");
        envelope(op).write_to(&mut out);
        out
    }

    /// Reads a request envelope (the simulator's side).
    pub fn parse(text: &str) -> Result<SoapRequest, String> {
        let root = xml::parse(text)?;
        if !root.is("Envelope") {
            return Err(format!("expected a SOAP Envelope, got <{}>", root.name));
        }
        let op = root
            .child("Body")
            .and_then(|b| b.children.first())
            .ok_or("SOAP Body without an operation")?;
        let ctx = op.child("callContext").ok_or("no callContext")?;
        let context = CallContext {
            code_lang: ctx.text_at("codeLang").unwrap_or_default().to_owned(),
            pool_alias: ctx.text_at("poolAlias").unwrap_or_default().to_owned(),
            pool_id: ctx.text_at("poolId").unwrap_or_default().to_owned(),
            request_config: ctx.text_at("requestConfig").unwrap_or_default().to_owned(),
        };
        let public_name = op.text_at("publicName").ok_or("no publicName")?.to_owned();
        let keys = || -> Vec<(String, String)> {
            op.child("objectKeys")
                .map(|k| {
                    k.children
                        .iter()
                        .map(|item| {
                            (
                                item.text_at("key").unwrap_or_default().to_owned(),
                                item.text_at("value").unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let text_of = |name: &str| op.text_at(name).unwrap_or_default().to_owned();
        let call = match op.name.rsplit(':').next().unwrap_or_default() {
            "save" => SoapCall::Save {
                public_name,
                object_xml: text_of("objectXml"),
            },
            "read" => SoapCall::Read {
                public_name,
                keys: keys(),
            },
            "query" => SoapCall::Query {
                public_name,
                keys: keys(),
                list_size: op
                    .text_at("listSize")
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or("query without a valid listSize")?,
            },
            "modify" => SoapCall::Modify {
                public_name,
                keys: keys(),
                object_xml: text_of("objectXml"),
            },
            "run" => SoapCall::Run {
                public_name,
                input_xml: text_of("inputXml"),
            },
            other => return Err(format!("unsupported operation {other}")),
        };
        Ok(SoapRequest { context, call })
    }
}

/// `CAdxResultXml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CAdxResult {
    /// 1 ok, 0 failed.
    pub status: i32,
    pub messages: Vec<X3Message>,
    /// `<RESULT>…</RESULT>` as text (empty on failure).
    pub result_xml: String,
}

impl CAdxResult {
    /// The answer envelope to `operation` (`saveResponse` / `saveReturn`).
    pub fn to_envelope(&self, operation: &str, duration_ms: u64) -> String {
        let mut messages = Element::new("messages")
            .with_attr("xsi:type", "soapenc:Array")
            .with_attr(
                "soapenc:arrayType",
                format!("wss:CAdxMessage[{}]", self.messages.len()),
            );
        for m in &self.messages {
            messages.children.push(
                Element::new("messages")
                    .with_attr("xsi:type", "wss:CAdxMessage")
                    .with(typed("message", "xsd:string", m.text.clone()))
                    .with(typed("type", "xsd:string", m.kind.to_string())),
            );
        }
        let ret = Element::new(format!("{operation}Return"))
            .with_attr("xsi:type", "wss:CAdxResultXml")
            .with(messages)
            .with(typed("resultXml", "xsd:string", self.result_xml.clone()))
            .with(typed("status", "xsd:int", self.status.to_string()))
            .with(
                Element::new("technicalInfos")
                    .with_attr("xsi:type", "wss:CAdxTechnicalInfos")
                    .with(typed("busy", "xsd:boolean", "false"))
                    .with(typed("changeLanguage", "xsd:boolean", "false"))
                    .with(typed("changeUserId", "xsd:boolean", "false"))
                    .with(typed("flushAdx", "xsd:boolean", "false"))
                    .with(typed(
                        "totalDuration",
                        "xsd:double",
                        duration_ms.to_string(),
                    )),
            );
        let op = Element::new(format!("wss:{operation}Response"))
            .with_attr("soapenv:encodingStyle", SOAPENC_NS)
            .with(ret);
        xml::document(&envelope(op))
    }

    /// Reads an answer envelope: the operation's `…Return`. A SOAP Fault is `Err` with
    /// its `faultstring`.
    pub fn parse(text: &str) -> Result<CAdxResult, SoapParseError> {
        let root = xml::parse(text).map_err(SoapParseError::Malformed)?;
        let body = root
            .child("Body")
            .ok_or_else(|| SoapParseError::Malformed("no SOAP Body".into()))?;
        if let Some(fault) = body.child("Fault") {
            return Err(SoapParseError::Fault {
                code: fault.text_at("faultcode").unwrap_or_default().to_owned(),
                text: fault.text_at("faultstring").unwrap_or_default().to_owned(),
            });
        }
        let ret = body
            .children
            .first()
            .and_then(|resp| resp.children.first())
            .ok_or_else(|| SoapParseError::Malformed("no …Return in the SOAP Body".into()))?;
        let status = ret
            .text_at("status")
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| SoapParseError::Malformed("CAdxResultXml without status".into()))?;
        let mut messages = Vec::new();
        collect_messages(ret, &mut messages);
        Ok(CAdxResult {
            status,
            messages,
            result_xml: ret.text_at("resultXml").unwrap_or_default().to_owned(),
        })
    }
}

/// Elements holding both `message` and `type` are `CAdxMessage`s, wherever Axis put them.
fn collect_messages(el: &Element, out: &mut Vec<X3Message>) {
    for c in &el.children {
        if let (Some(text), Some(kind)) = (c.text_at("message"), c.text_at("type")) {
            out.push(X3Message {
                kind: kind.trim().parse().unwrap_or(super::error::MESSAGE_ERROR),
                text: text.to_owned(),
            });
        } else {
            collect_messages(c, out);
        }
    }
}

/// Why a SOAP answer could not be read as a `CAdxResultXml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SoapParseError {
    Fault { code: String, text: String },
    Malformed(String),
}

/// A SOAP 1.1 Fault envelope (`soapenv:Server` / `soapenv:Client`).
pub fn fault_envelope(code: &str, text: &str) -> String {
    let fault = Element::new("soapenv:Fault")
        .with_leaf("faultcode", code)
        .with_leaf("faultstring", text);
    xml::document(&envelope(fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let req = SoapRequest {
            context: CallContext {
                code_lang: "ENG".into(),
                pool_alias: "SEED".into(),
                pool_id: String::new(),
                request_config: "adxwss.optreturn=XML&adxwss.beautify=false".into(),
            },
            call: SoapCall::Modify {
                public_name: "SOH".into(),
                keys: vec![("SOHNUM".into(), "SO<1>".into())],
                object_xml:
                    "<PARAM><GRP ID=\"SOH0_1\"><FLD NAME=\"CUSORDREF\">a&b</FLD></GRP></PARAM>"
                        .into(),
            },
        };
        let text = req.to_envelope("UTF-8");
        assert!(
            text.contains("<wss:modify soapenv:encodingStyle="),
            "{text}"
        );
        assert!(text.contains("<poolAlias xsi:type=\"xsd:string\">SEED</poolAlias>"));
        assert!(text.contains("adxwss.optreturn=XML&amp;adxwss.beautify=false"));
        assert_eq!(SoapRequest::parse(&text).unwrap(), req);
    }

    #[test]
    fn result_round_trip_and_fault() {
        let res = CAdxResult {
            status: 0,
            messages: vec![X3Message::error("Customer C9 does not exist")],
            result_xml: String::new(),
        };
        let text = res.to_envelope("save", 12);
        assert!(text.contains("<saveReturn xsi:type=\"wss:CAdxResultXml\">"));
        assert_eq!(CAdxResult::parse(&text).unwrap(), res);
        let fault = fault_envelope("soapenv:Server", "boom");
        assert_eq!(
            CAdxResult::parse(&fault),
            Err(SoapParseError::Fault {
                code: "soapenv:Server".into(),
                text: "boom".into()
            })
        );
    }

    #[test]
    fn reads_cdata_result_xml() {
        let text = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<wss:readResponse xmlns:wss="http://www.adonix.com/WSS"><readReturn>
<messages/><resultXml><![CDATA[<RESULT><GRP ID="BPC0_1"><FLD NAME="BPCNUM">C1</FLD></GRP></RESULT>]]></resultXml>
<status>1</status></readReturn></wss:readResponse></soapenv:Body></soapenv:Envelope>"#;
        let res = CAdxResult::parse(text).unwrap();
        assert_eq!(res.status, 1);
        assert!(res.messages.is_empty());
        assert!(res.result_xml.contains("<FLD NAME=\"BPCNUM\">C1</FLD>"));
    }
}
