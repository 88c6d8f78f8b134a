//! A small XML toolkit for the Intacct wire format: an element tree parsed with `quick-xml`
//! (entity references resolved, names kept as sent and compared case-insensitively, because
//! Intacct writes `customer` in one answer and `CUSTOMER` in the next), and an escaping
//! writer for requests and simulator answers.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// Nesting limit for parsed documents: deeper input is refused, not recursed into.
pub const MAX_DEPTH: usize = 64;

/// One XML element: its name as sent, attributes, text (trimmed) and children in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn new(name: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            ..Element::default()
        }
    }

    /// `<name>text</name>`.
    pub fn leaf(name: impl Into<String>, text: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            text: text.into(),
            ..Element::default()
        }
    }

    /// Builder: adds a child.
    #[must_use]
    pub fn with(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    /// Builder: adds `<name>text</name>`.
    #[must_use]
    pub fn with_leaf(self, name: impl Into<String>, text: impl Into<String>) -> Element {
        self.with(Element::leaf(name, text))
    }

    /// Builder: sets an attribute.
    #[must_use]
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Element {
        self.attrs.push((name.into(), value.into()));
        self
    }

    /// Whether this element is called `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The first child called `name` (case-insensitive).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(name))
    }

    pub fn child_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.children.iter_mut().find(|c| c.is(name))
    }

    /// Every child called `name` (case-insensitive).
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.is(name))
    }

    /// The element at a `/`-separated path of child names (case-insensitive).
    pub fn find(&self, path: &str) -> Option<&Element> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |e, name| e.child(name))
    }

    /// The text at a `/`-separated path, if the element exists.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.find(path).map(|e| e.text.as_str())
    }

    /// An attribute (case-insensitive name: `resultId` and `resultid` both occur).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a child leaf's text, adding the child if missing.
    pub fn set_leaf(&mut self, name: &str, text: impl Into<String>) {
        let text = text.into();
        match self.child_mut(name) {
            Some(c) => c.text = text,
            None => self.children.push(Element::leaf(name, text)),
        }
    }

    /// Serialises the element (no declaration, no whitespace).
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }

    pub fn write_to(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}=\"{}\"", escape(v));
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        out.push_str(&escape(&self.text));
        for c in &self.children {
            c.write_to(out);
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

/// Escapes `& < > " '` for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole document: `<?xml …?>` and the root.
pub fn document(root: &Element) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    root.write_to(&mut out);
    out
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

fn start_element(e: &BytesStart<'_>) -> Result<Element, String> {
    let name = e.local_name().into_inner().to_owned();
    let mut el = Element::new(name);
    for a in e.attributes() {
        let a = a.map_err(|err| err.to_string())?;
        let key = a.key.local_name().into_inner().to_owned();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| err.to_string())?
            .into_owned();
        el.attrs.push((key, value));
    }
    Ok(el)
}

/// Parses a document into its root element. Text is trimmed; mixed content is concatenated.
pub fn parse(input: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(input);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(|e| e.to_string())?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("XML nested deeper than {MAX_DEPTH} levels"));
                }
                stack.push(start_element(&e)?);
            }
            Event::Empty(e) => {
                let el = start_element(&e)?;
                close(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                let mut el = stack.pop().ok_or("unbalanced end tag")?;
                el.text = el.text.trim().to_owned();
                close(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = r.resolve_char_ref().map_err(|e| e.to_string())?;
                let name = r.xml10_content();
                let c = resolved
                    .or_else(|| predefined_entity(&name))
                    .ok_or_else(|| format!("unknown entity &{name};"))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("unexpected end of document".into());
    }
    root.ok_or_else(|| "empty document".into())
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err("more than one root element".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_roundtrip(el: &Element) {
        assert_eq!(&parse(&document(el)).unwrap(), el);
    }

    #[test]
    fn escapes_and_resolves_entities() {
        let el = Element::new("a")
            .with_attr("k", "x\"y'<&>")
            .with_leaf("b", "R&D <Corp> \"q\" 'a'");
        assert_eq!(
            el.to_xml(),
            "<a k=\"x&quot;y&apos;&lt;&amp;&gt;\"><b>R&amp;D &lt;Corp&gt; &quot;q&quot; &apos;a&apos;</b></a>"
        );
        check_roundtrip(&el);
        let parsed = parse("<a><b>&#65;&#x42;&amp;c</b></a>").unwrap();
        assert_eq!(parsed.text_at("B"), Some("AB&c"));
    }

    #[test]
    fn case_insensitive_lookup() {
        let el = parse("<data resultId=\"x\"><customer><RECORDNO>1</RECORDNO></customer></data>")
            .unwrap();
        assert_eq!(el.attr("resultid"), Some("x"));
        assert_eq!(el.text_at("CUSTOMER/recordno"), Some("1"));
    }

    #[test]
    fn refuses_broken_documents() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
    }
}
