//! [`X3Record`]: one X3 record independent of the transport — header fields, dimensioned
//! (list) fields and line tables — and its two wire forms: the REST JSON resource and the
//! SOAP `<PARAM>` / `<RESULT>` payload.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::schema::ClassSchema;
use crate::intacct::xml::Element;

/// One line of a table: field → value.
pub type Line = BTreeMap<String, String>;

/// A record as X3 sends it: every value is text (X3 formats numbers and dates itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X3Record {
    pub fields: BTreeMap<String, String>,
    /// Dimensioned fields (`BPRNAM` → `["Acme", "Europe"]`).
    pub lists: BTreeMap<String, Vec<String>>,
    /// Line tables by block id (`SOH4_1` → lines).
    pub tables: BTreeMap<String, Vec<Line>>,
}

impl X3Record {
    pub fn new() -> X3Record {
        X3Record::default()
    }

    /// Builder: sets a header field.
    #[must_use]
    pub fn with(mut self, field: &str, value: impl Into<String>) -> X3Record {
        self.set(field, value);
        self
    }

    /// Builder: sets a dimensioned field.
    #[must_use]
    pub fn with_list(mut self, field: &str, values: Vec<String>) -> X3Record {
        self.lists.insert(field.into(), values);
        self
    }

    /// Builder: appends a line to a table.
    #[must_use]
    pub fn with_line(mut self, table: &str, line: Line) -> X3Record {
        self.tables.entry(table.into()).or_default().push(line);
        self
    }

    pub fn set(&mut self, field: &str, value: impl Into<String>) {
        self.fields.insert(field.into(), value.into());
    }

    /// A header field; a dimensioned field answers its first element.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str).or_else(|| {
            self.lists
                .get(field)
                .and_then(|l| l.first())
                .map(String::as_str)
        })
    }

    /// A header field, `""` when absent.
    pub fn text(&self, field: &str) -> &str {
        self.get(field).unwrap_or("")
    }

    pub fn list(&self, field: &str) -> &[String] {
        self.lists.get(field).map_or(&[], Vec::as_slice)
    }

    pub fn lines(&self, table: &str) -> &[Line] {
        self.tables.get(table).map_or(&[], Vec::as_slice)
    }

    /// Field names used anywhere in the header (fields and lists).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.fields
            .keys()
            .chain(self.lists.keys())
            .map(String::as_str)
    }

    /// Overlays `other` on this record: its fields and lists replace ours, each table it
    /// names replaces ours (X3 partial update).
    pub fn merge(&mut self, other: &X3Record) {
        for (k, v) in &other.fields {
            self.fields.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.lists {
            self.lists.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.tables {
            self.tables.insert(k.clone(), v.clone());
        }
    }

    // ----- REST JSON -----

    /// The JSON resource: fields as strings, lists as string arrays, tables as arrays of
    /// objects (the simulator adds `$uuid` and friends).
    pub fn to_json(&self) -> Map<String, Json> {
        let mut m = Map::new();
        for (k, v) in &self.fields {
            m.insert(k.clone(), Json::String(v.clone()));
        }
        for (k, v) in &self.lists {
            m.insert(
                k.clone(),
                Json::Array(v.iter().cloned().map(Json::String).collect()),
            );
        }
        for (k, lines) in &self.tables {
            let arr = lines
                .iter()
                .map(|line| {
                    Json::Object(
                        line.iter()
                            .map(|(f, v)| (f.clone(), Json::String(v.clone())))
                            .collect(),
                    )
                })
                .collect();
            m.insert(k.clone(), Json::Array(arr));
        }
        m
    }

    /// Reads a JSON resource. `$`-properties (`$uuid`, `$etag`, `$url`…) are skipped;
    /// numbers and booleans are kept as their text; `null` is an empty field.
    pub fn from_json(value: &Json) -> Result<X3Record, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| "an X3 resource must be a JSON object".to_owned())?;
        let mut rec = X3Record::new();
        for (k, v) in obj {
            if k.starts_with('$') {
                continue;
            }
            match v {
                Json::Array(items) if items.iter().all(Json::is_object) && !items.is_empty() => {
                    let mut lines = Vec::with_capacity(items.len());
                    for item in items {
                        let mut line = Line::new();
                        for (f, fv) in item.as_object().into_iter().flatten() {
                            if f.starts_with('$') {
                                continue;
                            }
                            line.insert(f.clone(), scalar(fv).ok_or_else(|| nested(k, f))?);
                        }
                        lines.push(line);
                    }
                    rec.tables.insert(k.clone(), lines);
                }
                Json::Array(items) => {
                    let list = items
                        .iter()
                        .map(|i| scalar(i).ok_or_else(|| nested(k, "[]")))
                        .collect::<Result<Vec<_>, _>>()?;
                    rec.lists.insert(k.clone(), list);
                }
                other => {
                    let s = scalar(other).ok_or_else(|| nested(k, ""))?;
                    rec.fields.insert(k.clone(), s);
                }
            }
        }
        Ok(rec)
    }

    // ----- SOAP payload -----

    /// `<PARAM><GRP ID><FLD NAME>…</FLD><LST NAME SIZE><ITM>…</ITM></LST></GRP>
    /// <TAB ID><LIN NUM><FLD NAME>…</FLD></LIN></TAB></PARAM>`, fields placed by `schema`
    /// (a single `GRP1` without one).
    pub fn to_param(&self, schema: Option<&ClassSchema>) -> Element {
        self.to_block("PARAM", schema)
    }

    /// The same layout under `<RESULT>` (what X3 answers).
    pub fn to_result(&self, schema: Option<&ClassSchema>) -> Element {
        self.to_block("RESULT", schema)
    }

    fn to_block(&self, root: &str, schema: Option<&ClassSchema>) -> Element {
        let group_of = |f: &str| schema.map_or("GRP1", |s| s.group_of(f));
        let mut groups: Vec<(&str, Element)> = Vec::new();
        for (k, v) in &self.fields {
            let i = group_index(&mut groups, group_of(k));
            groups[i].1.children.push(fld(k, v));
        }
        for (k, values) in &self.lists {
            let i = group_index(&mut groups, group_of(k));
            let mut lst = Element::new("LST")
                .with_attr("NAME", k.clone())
                .with_attr("SIZE", values.len().to_string());
            lst.children = values.iter().map(|v| Element::leaf("ITM", v)).collect();
            groups[i].1.children.push(lst);
        }
        let mut out = Element::new(root);
        out.children = groups.into_iter().map(|(_, e)| e).collect();
        for (id, lines) in &self.tables {
            let mut tab = Element::new("TAB")
                .with_attr("ID", id.clone())
                .with_attr("SIZE", lines.len().to_string());
            for (n, line) in lines.iter().enumerate() {
                let mut lin = Element::new("LIN").with_attr("NUM", (n + 1).to_string());
                lin.children = line.iter().map(|(k, v)| fld(k, v)).collect();
                tab.children.push(lin);
            }
            out.children.push(tab);
        }
        out
    }

    /// Reads a `<PARAM>` or `<RESULT>` block: every `GRP` is flattened into the header,
    /// every `TAB` becomes a table.
    pub fn from_block(block: &Element) -> Result<X3Record, String> {
        let mut rec = X3Record::new();
        for child in &block.children {
            if child.is("GRP") {
                read_group(child, &mut rec)?;
            } else if child.is("TAB") {
                let id = child.attr("ID").ok_or("TAB without ID")?.to_owned();
                let mut lines = Vec::new();
                for lin in child.children_named("LIN") {
                    let mut line = Line::new();
                    for f in lin.children_named("FLD") {
                        let name = f.attr("NAME").ok_or("FLD without NAME")?;
                        line.insert(name.to_owned(), f.text.clone());
                    }
                    lines.push(line);
                }
                rec.tables.insert(id, lines);
            } else if child.is("FLD") {
                let name = child.attr("NAME").ok_or("FLD without NAME")?;
                rec.fields.insert(name.to_owned(), child.text.clone());
            }
        }
        Ok(rec)
    }

    /// Reads a SOAP `query` answer: `<RESULT><TAB><LIN NUM>…</LIN></TAB></RESULT>`, one
    /// record per line.
    pub fn from_query_result(block: &Element) -> Result<Vec<X3Record>, String> {
        let mut out = Vec::new();
        for tab in block.children_named("TAB") {
            for lin in tab.children_named("LIN") {
                let mut rec = X3Record::new();
                for f in lin.children_named("FLD") {
                    let name = f.attr("NAME").ok_or("FLD without NAME")?;
                    rec.fields.insert(name.to_owned(), f.text.clone());
                }
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// One query line: `<LIN NUM><FLD NAME>…` (header fields only).
    pub fn to_query_line(&self, num: usize) -> Element {
        let mut lin = Element::new("LIN").with_attr("NUM", num.to_string());
        lin.children = self.fields.iter().map(|(k, v)| fld(k, v)).collect();
        lin
    }
}

fn group_index(groups: &mut Vec<(&'static str, Element)>, id: &'static str) -> usize {
    match groups.iter().position(|(g, _)| *g == id) {
        Some(i) => i,
        None => {
            groups.push((id, Element::new("GRP").with_attr("ID", id)));
            groups.len() - 1
        }
    }
}

fn read_group(group: &Element, rec: &mut X3Record) -> Result<(), String> {
    for f in &group.children {
        if f.is("FLD") {
            let name = f.attr("NAME").ok_or("FLD without NAME")?;
            rec.fields.insert(name.to_owned(), f.text.clone());
        } else if f.is("LST") {
            let name = f.attr("NAME").ok_or("LST without NAME")?;
            let items = f.children_named("ITM").map(|i| i.text.clone()).collect();
            rec.lists.insert(name.to_owned(), items);
        }
    }
    Ok(())
}

fn fld(name: &str, value: &str) -> Element {
    Element::leaf("FLD", value).with_attr("NAME", name)
}

fn scalar(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => number_text(n),
        Json::Bool(b) => Some(b.to_string()),
        Json::Null => Some(String::new()),
        Json::Array(_) | Json::Object(_) => None,
    }
}

/// Most significant digits a JSON number may carry: serde_json reads a non-integer as the
/// nearest binary double and prints it back shortest-round-trip, which gives the literal
/// back exactly up to 15 significant digits. Longer numbers are refused (X3 representations
/// send decimals as strings, which are always kept verbatim).
pub const JSON_NUMBER_DIGITS_MAX: usize = 15;

fn number_text(n: &serde_json::Number) -> Option<String> {
    let text = n.to_string();
    if n.is_f64() {
        let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
        let digits = mantissa
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>();
        if digits.trim_start_matches('0').len() > JSON_NUMBER_DIGITS_MAX {
            return None;
        }
    }
    Some(text)
}

fn nested(field: &str, inner: &str) -> String {
    format!(
        "unsupported value (nested, or a number beyond {JSON_NUMBER_DIGITS_MAX} digits) at {field}{}{inner}",
        if inner.is_empty() { "" } else { "." }
    )
}

#[cfg(test)]
mod tests {
    use super::super::schema::{BPCUSTOMER, SORDER};
    use super::*;
    use crate::intacct::xml;

    fn order() -> X3Record {
        X3Record::new()
            .with("SALFCY", "FR011")
            .with("STOFCY", "FR012")
            .with("CUSORDREF", "006Qz & <1>")
            .with_line(
                "SOH4_1",
                [("ITMREF", "BMS001"), ("QTY", "2"), ("GROPRI", "10.50")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            )
    }

    #[test]
    fn param_places_fields_in_their_groups_and_round_trips() {
        let rec = order();
        let param = rec.to_param(Some(&SORDER));
        let text = param.to_xml();
        assert!(text.starts_with("<PARAM><GRP ID=\"SOH0_1\">"), "{text}");
        assert!(
            text.contains("<GRP ID=\"SOH2_1\"><FLD NAME=\"STOFCY\">FR012</FLD></GRP>"),
            "{text}"
        );
        assert!(
            text.contains("<TAB ID=\"SOH4_1\" SIZE=\"1\"><LIN NUM=\"1\">"),
            "{text}"
        );
        assert!(text.contains("006Qz &amp; &lt;1&gt;"), "{text}");
        let back = X3Record::from_block(&xml::parse(&text).unwrap()).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn lists_use_lst_and_json_arrays() {
        let rec = X3Record::new()
            .with("BPCNUM", "C1")
            .with_list("BPRNAM", vec!["Acme".into(), "Europe".into()]);
        let text = rec.to_param(Some(&BPCUSTOMER)).to_xml();
        assert!(
            text.contains("<LST NAME=\"BPRNAM\" SIZE=\"2\"><ITM>Acme</ITM><ITM>Europe</ITM></LST>"),
            "{text}"
        );
        assert_eq!(rec.get("BPRNAM"), Some("Acme"));
        let json = Json::Object(rec.to_json());
        assert_eq!(json["BPRNAM"][1], "Europe");
        assert_eq!(X3Record::from_json(&json).unwrap(), rec);
    }

    #[test]
    fn json_numbers_keep_their_decimal_text() {
        let rec = X3Record::from_json(
            &serde_json::json!({"AMT": 65.98, "QTY": 3, "BIG": 12345678901234567890u64}),
        )
        .unwrap();
        assert_eq!(rec.get("AMT"), Some("65.98"));
        assert_eq!(rec.get("QTY"), Some("3"));
        assert_eq!(rec.get("BIG"), Some("12345678901234567890"));
        let too_precise: Json = serde_json::from_str(r#"{"AMT": 0.12345678901234567}"#).unwrap();
        assert!(X3Record::from_json(&too_precise).is_err());
    }

    #[test]
    fn json_skips_dollar_properties_and_reads_lines() {
        let json = serde_json::json!({
            "$uuid": "6bc5644d", "$etag": "2015-08-18T08:14:25Z",
            "SOHNUM": "S004", "QTYTOT": 3, "SOH4_1": [{"$uuid": "x", "ITMREF": "ITM003", "QTY": 3}]
        });
        let rec = X3Record::from_json(&json).unwrap();
        assert_eq!(rec.get("SOHNUM"), Some("S004"));
        assert_eq!(rec.get("QTYTOT"), Some("3"));
        assert_eq!(
            rec.lines("SOH4_1")[0].get("QTY").map(String::as_str),
            Some("3")
        );
        assert!(!rec.fields.contains_key("$uuid"));
    }
}
