//! The Salesforce package (`salesforce/`, sfdx source format) checked against what cashloop
//! uses: every `*-meta.xml` is well-formed Metadata API XML in the right namespace; field files
//! name themselves and carry what their type needs; the custom fields per object are exactly
//! the simulator's (`Schema::default_org`), with matching types and flags; the Named
//! Credential, settings type and permission set are what the Apex and the connector need;
//! `sfdx-project.json` points at `force-app`; the Apex posts to the server's route with the
//! server's header; and the signature test vector in the Apex test class is recomputed with
//! `gateway::webhooks::signature`, the body against the simulator's Closed Won event.
//!
//! Nothing here runs Apex: that needs an org (`sf apex run test`, see README.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use gateway::crypto::FingerprintKey;
use quick_xml::Reader;
use quick_xml::events::Event;
use sync::salesforce::Record;
use sync::salesforce::simulator::schema::{FieldType, Schema};
use sync::salesforce::simulator::{Simulator, SimulatorConfig};

const METADATA_NS: &str = "http://soap.sforce.com/2006/04/metadata";
const DEFAULT_DIR: &str = "force-app/main/default";

fn package_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../salesforce")
}

fn default_dir() -> PathBuf {
    package_root().join(DEFAULT_DIR)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// A small element tree over quick-xml: enough to check structure, strict about well-formedness.

#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child called `name`.
    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    fn flag(&self, name: &str) -> Result<Option<bool>, String> {
        match self.text_of(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(format!("<{name}> is {other:?}, not true or false")),
        }
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses a whole document: an XML declaration (version 1.0, UTF-8), one root element, no
/// DOCTYPE, no text outside the root, every tag closed, only the predefined entities.
fn parse_xml(text: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut declared = false;
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {at}: {e}"))?;
        let close =
            |element: Element, stack: &mut Vec<Element>, root: &mut Option<Element>| match stack
                .last_mut()
            {
                Some(parent) => {
                    parent.children.push(element);
                    Ok(())
                }
                None if root.is_none() => {
                    *root = Some(element);
                    Ok(())
                }
                None => Err(format!("a second root element <{}>", element.name)),
            };
        match event {
            Event::Decl(d) => {
                if declared || root.is_some() || !stack.is_empty() || at != 0 {
                    return Err("the XML declaration must come first, once".into());
                }
                declared = true;
                let version = d.version().map_err(|e| e.to_string())?;
                if version != "1.0" {
                    return Err(format!("XML version {version}"));
                }
                match d.encoding() {
                    Some(Ok(e)) if e.eq_ignore_ascii_case("UTF-8") => {}
                    _ => return Err("the declaration must say encoding=\"UTF-8\"".into()),
                }
            }
            Event::Start(e) | Event::Empty(e) if root.is_some() && stack.is_empty() => {
                return Err(format!("a second root element <{}>", e.name().as_ref()));
            }
            Event::Start(e) => stack.push(open(&e)?),
            Event::Empty(e) => {
                let element = open(&e)?;
                close(element, &mut stack, &mut root)?;
            }
            Event::End(e) => {
                let element = stack.pop().ok_or("an end tag without a start tag")?;
                let name = e.name().as_ref().to_owned();
                if name != element.name {
                    return Err(format!("</{name}> closes <{}>", element.name));
                }
                close(element, &mut stack, &mut root)?;
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(parent) => parent.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(format!("text outside the root: {:?}", content.trim())),
                }
            }
            Event::CData(c) => {
                let parent = stack.last_mut().ok_or("CDATA outside the root")?;
                parent.text.push_str(&c.xml10_content());
            }
            Event::GeneralRef(r) => {
                let resolved = r.resolve_char_ref().map_err(|e| e.to_string())?;
                let name = r.xml10_content();
                let c = resolved
                    .or_else(|| predefined_entity(&name))
                    .ok_or_else(|| format!("unknown entity &{name};"))?;
                stack
                    .last_mut()
                    .ok_or("an entity outside the root")?
                    .text
                    .push(c);
            }
            Event::DocType(_) => return Err("a DOCTYPE (not used by the Metadata API)".into()),
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("<{}> is never closed", open.name));
    }
    if !declared {
        return Err("no XML declaration".into());
    }
    root.ok_or_else(|| "no root element".into())
}

fn open(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut element = Element {
        name: e.name().as_ref().to_owned(),
        ..Element::default()
    };
    for a in e.attributes() {
        let a = a.map_err(|e| format!("attribute of <{}>: {e}", element.name))?;
        let key = a.key.as_ref().to_owned();
        let value = a.value.to_string();
        if value.contains('&') {
            return Err(format!("attribute {key} holds an entity reference"));
        }
        element.attributes.push((key, value));
    }
    Ok(element)
}

/// Parses a metadata file and checks its root: the expected element, in the Metadata API
/// namespace (as the default namespace, no prefix).
fn parse_metadata(text: &str, root_name: &str) -> Result<Element, String> {
    let root = parse_xml(text)?;
    if root.name != root_name {
        return Err(format!("root <{}>, expected <{root_name}>", root.name));
    }
    match root.attribute("xmlns") {
        Some(METADATA_NS) => Ok(root),
        Some(other) => Err(format!(
            "root namespace {other:?}, expected {METADATA_NS:?}"
        )),
        None => Err(format!("root without xmlns=\"{METADATA_NS}\"")),
    }
}

fn check_xml(text: &str, expected: Result<(), &str>) {
    let got = parse_metadata(text, "CustomField").map(|_| ());
    match (got, expected) {
        (Ok(()), Ok(())) => {}
        (Err(e), Err(want)) => assert!(e.contains(want), "{text:?}: {e:?} should say {want:?}"),
        (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn the_xml_check_refuses_malformed_documents() {
    const D: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    let ns = format!(r#"xmlns="{METADATA_NS}""#);
    check_xml(
        &format!("{D}<CustomField {ns}><label>A &amp; B</label></CustomField>"),
        Ok(()),
    );
    check_xml(
        &format!("{D}<CustomField {ns}><label>x</lable></CustomField>"),
        Err(""),
    );
    check_xml(
        &format!("{D}<CustomField {ns}><label>x</label>"),
        Err("never closed"),
    );
    check_xml(
        &format!("{D}<CustomField {ns}/><CustomField {ns}/>"),
        Err("second root"),
    );
    check_xml(
        &format!("{D}<CustomField {ns}>&nbsp;</CustomField>"),
        Err("unknown entity"),
    );
    check_xml(
        &format!("{D}junk<CustomField {ns}/>"),
        Err("outside the root"),
    );
    check_xml(
        &format!("{D}<CustomField xmlns=\"urn:other\"/>"),
        Err("namespace"),
    );
    check_xml(&format!("{D}<CustomField/>"), Err("without xmlns"));
    check_xml(
        &format!("{D}<CustomObject {ns}/>"),
        Err("root <CustomObject>"),
    );
    check_xml(&format!("<CustomField {ns}/>"), Err("no XML declaration"));
    check_xml(
        &format!("{D}<CustomField {ns} a=\"1\" a=\"2\"/>"),
        Err("attribute"),
    );
    check_xml(D, Err("no root"));
}

// ---------------------------------------------------------------------------------------------
// The package on disk.

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The root element each metadata file suffix must have.
const ROOTS: &[(&str, &str)] = &[
    (".field-meta.xml", "CustomField"),
    (".object-meta.xml", "CustomObject"),
    (".cls-meta.xml", "ApexClass"),
    (".trigger-meta.xml", "ApexTrigger"),
    (".namedCredential-meta.xml", "NamedCredential"),
    (".permissionset-meta.xml", "PermissionSet"),
    (".md-meta.xml", "CustomMetadata"),
    (".js-meta.xml", "LightningComponentBundle"),
];

fn relative(path: &Path) -> String {
    path.strip_prefix(package_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_metadata_file_is_well_formed_in_the_metadata_namespace() {
    let files: Vec<PathBuf> = walk(&package_root())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with("-meta.xml"))
        .collect();
    assert!(files.len() >= 20, "only {} metadata files", files.len());
    let mut problems = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((_, root)) = ROOTS.iter().find(|(suffix, _)| name.ends_with(suffix)) else {
            problems.push(format!("{}: no known metadata type", relative(path)));
            continue;
        };
        if let Err(e) = parse_metadata(&read(path), root) {
            problems.push(format!("{}: {e}", relative(path)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `objects/<Object>/fields/<Field>.field-meta.xml` → object → field → parsed file.
fn package_fields() -> BTreeMap<String, BTreeMap<String, Element>> {
    let mut out: BTreeMap<String, BTreeMap<String, Element>> = BTreeMap::new();
    for object_dir in std::fs::read_dir(default_dir().join("objects")).unwrap() {
        let object_dir = object_dir.unwrap().path();
        let object = object_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let fields = out.entry(object).or_default();
        let Ok(entries) = std::fs::read_dir(object_dir.join("fields")) else {
            continue;
        };
        for file in entries {
            let path = file.unwrap().path();
            let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
            let name = file_name
                .strip_suffix(".field-meta.xml")
                .unwrap_or_else(|| panic!("{}: not a field file", relative(&path)));
            let element = parse_metadata(&read(&path), "CustomField")
                .unwrap_or_else(|e| panic!("{}: {e}", relative(&path)));
            fields.insert(name.to_owned(), element);
        }
    }
    out
}

/// The elements a field's type requires, and that their values make sense.
fn check_field(object: &str, file_stem: &str, f: &Element) -> Result<(), String> {
    let full_name = f.text_of("fullName").ok_or("no <fullName>")?;
    if full_name != file_stem {
        return Err(format!("<fullName>{full_name}</fullName> in {file_stem}"));
    }
    if !full_name.ends_with("__c") {
        return Err("a custom field's name ends in __c".into());
    }
    if f.text_of("label").is_none_or(str::is_empty) {
        return Err("no <label>".into());
    }
    let field_type = f.text_of("type").ok_or("no <type>")?;
    for flag in ["externalId", "unique", "required", "caseSensitive"] {
        f.flag(flag)?;
    }
    let number = |name: &str| -> Result<u32, String> {
        f.text_of(name)
            .ok_or_else(|| format!("a {field_type} field needs <{name}>"))?
            .parse::<u32>()
            .map_err(|e| format!("<{name}>: {e}"))
    };
    match field_type {
        "Text" => {
            let length = number("length")?;
            if !(1..=255).contains(&length) {
                return Err(format!("Text length {length} outside 1..=255"));
            }
        }
        "Currency" | "Number" | "Percent" => {
            let precision = number("precision")?;
            let scale = number("scale")?;
            if !(1..=18).contains(&precision) || scale > precision {
                return Err(format!("precision {precision}, scale {scale}"));
            }
        }
        "Lookup" | "MasterDetail" => {
            f.text_of("referenceTo").ok_or("no <referenceTo>")?;
            f.text_of("relationshipName")
                .ok_or("no <relationshipName>")?;
            f.text_of("relationshipLabel")
                .ok_or("no <relationshipLabel>")?;
            if field_type == "Lookup" {
                let constraint = f
                    .text_of("deleteConstraint")
                    .ok_or("no <deleteConstraint>")?;
                if !["SetNull", "Restrict", "Cascade"].contains(&constraint) {
                    return Err(format!("deleteConstraint {constraint}"));
                }
                if f.flag("required")? == Some(true) && constraint == "SetNull" {
                    return Err("a required lookup cannot be SetNull".into());
                }
            }
        }
        "Picklist" => {
            let definition = f
                .child("valueSet")
                .and_then(|v| v.child("valueSetDefinition"))
                .ok_or("a Picklist needs <valueSet><valueSetDefinition>")?;
            let mut seen = BTreeSet::new();
            for value in definition.all("value") {
                let name = value
                    .text_of("fullName")
                    .ok_or("a value without fullName")?;
                value.text_of("label").ok_or("a value without label")?;
                if !seen.insert(name.to_owned()) {
                    return Err(format!("picklist value {name} twice"));
                }
            }
            if seen.is_empty() {
                return Err("a Picklist without values".into());
            }
        }
        "Checkbox" => {
            f.flag("defaultValue")?
                .ok_or("a Checkbox needs <defaultValue>true|false")?;
        }
        "Date" | "DateTime" | "Email" | "Phone" | "Url" => {}
        other => return Err(format!("type {other} is not checked here; add it")),
    }
    if object.ends_with("__mdt") && f.text_of("fieldManageability").is_none() {
        return Err("a custom metadata field needs <fieldManageability>".into());
    }
    Ok(())
}

#[test]
fn field_files_name_themselves_and_have_what_their_type_needs() {
    let mut problems = Vec::new();
    let mut count = 0;
    for (object, fields) in package_fields() {
        for (name, f) in &fields {
            count += 1;
            if let Err(e) = check_field(&object, name, f) {
                problems.push(format!("{object}.{name}: {e}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(count >= 14, "only {count} fields");
}

#[test]
fn custom_objects_have_their_object_file() {
    let objects = default_dir().join("objects");
    for object in package_fields().keys() {
        let file = objects
            .join(object)
            .join(format!("{object}.object-meta.xml"));
        let custom = object.ends_with("__c") || object.ends_with("__mdt");
        // Standard objects (Account, Opportunity) are not ours to redefine: fields only.
        assert_eq!(file.exists(), custom, "{}", relative(&file));
        if !custom {
            continue;
        }
        let o = parse_metadata(&read(&file), "CustomObject").unwrap();
        assert!(o.text_of("label").is_some() && o.text_of("pluralLabel").is_some());
        if object.ends_with("__c") {
            let name_field = o.child("nameField").expect("nameField");
            assert!(name_field.text_of("label").is_some());
            // The simulator's Name is a createable string: a Text name, not an AutoNumber.
            assert_eq!(name_field.text_of("type"), Some("Text"), "{object}");
            assert_eq!(o.text_of("deploymentStatus"), Some("Deployed"));
            assert!(
                ["Private", "Read", "ReadWrite"].contains(&o.text_of("sharingModel").unwrap()),
                "{object}: sharingModel"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The package against the simulator's schema (what the connector reads and writes).

/// The Metadata API type of a simulator field type.
fn metadata_types(t: &FieldType) -> &'static [&'static str] {
    match t {
        FieldType::String(_) => &["Text"],
        FieldType::TextArea => &["TextArea", "LongTextArea"],
        FieldType::Picklist => &["Picklist"],
        FieldType::Email => &["Email"],
        FieldType::Phone => &["Phone"],
        FieldType::Url => &["Url"],
        FieldType::Reference(_) => &["Lookup", "MasterDetail"],
        FieldType::Boolean => &["Checkbox"],
        FieldType::Currency => &["Currency"],
        FieldType::Double | FieldType::Int => &["Number"],
        FieldType::Percent => &["Percent"],
        FieldType::Date => &["Date"],
        FieldType::DateTime => &["DateTime"],
        FieldType::Id => &[],
    }
}

#[test]
fn custom_fields_are_exactly_the_simulators() {
    let schema = Schema::default_org();
    let package = package_fields();
    let want: BTreeMap<String, BTreeSet<String>> = schema
        .objects()
        .map(|o| {
            let names = o
                .fields
                .values()
                .filter(|f| f.custom)
                .map(|f| f.name.clone())
                .collect::<BTreeSet<_>>();
            (o.name.clone(), names)
        })
        .filter(|(_, names)| !names.is_empty())
        .collect();
    // The settings type is the org's own configuration, not data the connector maps.
    let got: BTreeMap<String, BTreeSet<String>> = package
        .iter()
        .filter(|(object, _)| !object.ends_with("__mdt"))
        .map(|(object, fields)| (object.clone(), fields.keys().cloned().collect()))
        .collect();
    assert_eq!(
        got, want,
        "package fields (left) vs simulator schema (right)"
    );

    let mut problems = Vec::new();
    for (object, names) in &want {
        let def = schema.object(object).unwrap();
        for name in names {
            let sim = def.field(name).unwrap();
            let f = &package[object][name];
            let t = f.text_of("type").unwrap_or_default();
            let mut wrong = |what: String| problems.push(format!("{object}.{name}: {what}"));
            if !metadata_types(&sim.field_type).contains(&t) {
                wrong(format!("type {t}, simulator {:?}", sim.field_type));
            }
            if let FieldType::String(n) = sim.field_type
                && f.text_of("length") != Some(n.to_string().as_str())
            {
                wrong(format!("length {:?}, simulator {n}", f.text_of("length")));
            }
            if let FieldType::Reference(target) = sim.field_type
                && f.text_of("referenceTo") != Some(target)
            {
                wrong(format!(
                    "referenceTo {:?}, simulator {target}",
                    f.text_of("referenceTo")
                ));
            }
            let flag = |n: &str| f.flag(n).unwrap().unwrap_or(false);
            if flag("externalId") != sim.external_id {
                wrong(format!("externalId, simulator {}", sim.external_id));
            }
            if flag("unique") != sim.unique {
                wrong(format!("unique, simulator {}", sim.unique));
            }
            let required = flag("required") || t == "MasterDetail";
            if required != sim.required {
                wrong(format!("required {required}, simulator {}", sim.required));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_integration_permission_set_grants_every_optional_field() {
    let path = default_dir().join("permissionsets/Cashloop_Integration.permissionset-meta.xml");
    let p = parse_metadata(&read(&path), "PermissionSet").unwrap();
    let granted: BTreeSet<String> = p
        .all("fieldPermissions")
        .map(|fp| {
            assert_eq!(fp.flag("readable").unwrap(), Some(true));
            assert_eq!(fp.flag("editable").unwrap(), Some(true));
            fp.text_of("field").unwrap().to_owned()
        })
        .collect();
    // Required fields are always editable; the Metadata API refuses them in a permission set.
    let optional: BTreeSet<String> = package_fields()
        .iter()
        .filter(|(object, _)| !object.ends_with("__mdt"))
        .flat_map(|(object, fields)| {
            fields
                .iter()
                .filter(|(_, f)| f.flag("required").unwrap() != Some(true))
                .map(move |(name, _)| format!("{object}.{name}"))
        })
        .collect();
    assert_eq!(granted, optional);
    let payment = p
        .all("objectPermissions")
        .find(|o| o.text_of("object") == Some("Cashloop_Payment__c"))
        .expect("object permissions on Cashloop_Payment__c");
    for grant in ["allowRead", "allowCreate", "allowEdit"] {
        assert_eq!(payment.flag(grant).unwrap(), Some(true), "{grant}");
    }
}

#[test]
fn the_settings_type_is_protected_and_ships_no_secret() {
    let dir = default_dir().join("objects/Cashloop_Settings__mdt");
    let o = parse_metadata(
        &read(&dir.join("Cashloop_Settings__mdt.object-meta.xml")),
        "CustomObject",
    )
    .unwrap();
    assert_eq!(o.text_of("visibility"), Some("Protected"));
    let fields = &package_fields()["Cashloop_Settings__mdt"];
    let secret = &fields["Event_Secret__c"];
    assert_eq!(secret.text_of("type"), Some("Text"));
    assert_eq!(secret.text_of("length"), Some("64"));
    let enabled = &fields["Enabled__c"];
    assert_eq!(enabled.text_of("type"), Some("Checkbox"));
    assert_eq!(enabled.flag("defaultValue").unwrap(), Some(false));
    // No custom metadata record (which would carry a secret) is part of the package.
    let records: Vec<String> = walk(&package_root())
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".md-meta.xml"))
        .map(|p| relative(p))
        .collect();
    assert!(records.is_empty(), "records in the package: {records:?}");
}

#[test]
fn the_named_credential_is_a_placeholder_without_credentials() {
    let path = default_dir().join("namedCredentials/Cashloop.namedCredential-meta.xml");
    let n = parse_metadata(&read(&path), "NamedCredential").unwrap();
    assert_eq!(n.text_of("endpoint"), Some("https://cashloop.example.com"));
    assert_eq!(n.text_of("principalType"), Some("Anonymous"));
    assert_eq!(n.text_of("protocol"), Some("NoAuthentication"));
    assert_eq!(n.flag("generateAuthorizationHeader").unwrap(), Some(false));
    for secret in [
        "password",
        "username",
        "oauthToken",
        "certificate",
        "oauthRefreshToken",
    ] {
        assert!(
            n.child(secret).is_none(),
            "<{secret}> in the Named Credential"
        );
    }
}

#[test]
fn sfdx_project_points_at_force_app() {
    let project: serde_json::Value =
        serde_json::from_str(&read(&package_root().join("sfdx-project.json"))).unwrap();
    let dirs = project["packageDirectories"].as_array().unwrap();
    let default: Vec<_> = dirs.iter().filter(|d| d["default"] == true).collect();
    assert_eq!(default.len(), 1);
    assert_eq!(default[0]["path"], "force-app");
    assert!(default_dir().is_dir());
    let api = project["sourceApiVersion"].as_str().unwrap();
    assert!(api.parse::<f64>().is_ok(), "sourceApiVersion {api}");
    // Every Apex file is compiled at the project's API version.
    for path in walk(&default_dir()) {
        let name = path.to_string_lossy().into_owned();
        let root = if name.ends_with(".cls-meta.xml") {
            "ApexClass"
        } else if name.ends_with(".trigger-meta.xml") {
            "ApexTrigger"
        } else {
            continue;
        };
        let m = parse_metadata(&read(&path), root).unwrap();
        assert_eq!(m.text_of("apiVersion"), Some(api), "{}", relative(&path));
        assert_eq!(m.text_of("status"), Some("Active"), "{}", relative(&path));
        let source = path.to_string_lossy().replace("-meta.xml", "");
        assert!(Path::new(&source).is_file(), "{source} missing");
    }
}

// ---------------------------------------------------------------------------------------------
// The Apex against the server.

fn apex(name: &str) -> String {
    read(&default_dir().join(name))
}

#[test]
fn apex_calls_the_servers_route_with_the_servers_header() {
    let server = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/server.rs"));
    // The route as declared in the server's one list of /v1 routes (`v1_routes!`).
    assert!(server.contains(r#"open POST "/v1/events/salesforce" => salesforce_event;"#));
    assert!(server.contains(r#""x-cashloop-signature""#));

    let events = apex("classes/CashloopEvents.cls");
    assert!(events.contains("PATH = '/v1/events/salesforce';"));
    assert!(events.contains("ENDPOINT = 'callout:Cashloop' + PATH;"));
    assert!(events.contains("implements Queueable, Database.AllowsCallouts"));
    assert!(events.contains("STAGE = 'Closed Won';"));
    let signature = apex("classes/CashloopSignature.cls");
    assert!(signature.contains("HEADER = 'X-Cashloop-Signature';"));
    assert!(signature.contains("Crypto.generateMac('hmacSHA256'"));
    assert!(signature.contains("EncodingUtil.convertFromHex("));
    assert!(signature.contains("EncodingUtil.convertToHex(mac)"));
    // The Named Credential the Apex names exists.
    assert!(
        default_dir()
            .join("namedCredentials/Cashloop.namedCredential-meta.xml")
            .is_file()
    );
    let trigger = apex("triggers/OpportunityClosedWon.trigger");
    assert!(
        trigger
            .contains("trigger OpportunityClosedWon on Opportunity (after insert, after update)")
    );
    assert!(trigger.contains("CashloopEvents.onAfterSave("));
    let test = apex("classes/CashloopEventsTest.cls");
    assert!(test.contains("implements HttpCalloutMock"));
    assert!(test.contains("'callout:Cashloop/v1/events/salesforce'"));
    assert!(test.contains("req.getHeader('X-Cashloop-Signature')"));
}

/// The Opportunity's payment-link component: the LWC calls the Apex method, which POSTs the
/// server's `/v1/payment_links` route through the Named Credential with the API key and an
/// Idempotency-Key, and only with fields the server accepts.
#[test]
fn the_payment_link_component_calls_the_servers_route() {
    let server = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/server.rs"));
    assert!(server.contains(r#"key POST "/v1/payment_links" => post_payment_link;"#));
    let pay = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/console/pay.rs"));
    let apex_src = apex("classes/CashloopPaymentLinks.cls");
    assert!(apex_src.contains("PATH = '/v1/payment_links';"));
    assert!(apex_src.contains("ENDPOINT = 'callout:Cashloop' + PATH;"));
    assert!(apex_src.contains("req.setHeader('Authorization', 'Bearer ' + s.apiKey);"));
    assert!(apex_src.contains("req.setHeader('Idempotency-Key'"));
    assert!(apex_src.contains("@AuraEnabled"));
    assert!(apex_src.contains("public static Map<String, Object> createLink(Id opportunityId)"));
    // Every body key the Apex sends is one the server accepts.
    for key in [
        "opportunity_id",
        "account_id",
        "amount",
        "currency",
        "description",
        "invoice_ref",
    ] {
        assert!(apex_src.contains(&format!("'{key}'")), "{key} not sent");
        assert!(
            pay.contains(&format!("\"{key}\",")),
            "{key} not accepted by the server"
        );
    }
    let settings = apex("classes/CashloopEvents.cls");
    assert!(settings.contains("s.apiKey = row.API_Key__c;"));
    let key = &package_fields()["Cashloop_Settings__mdt"]["API_Key__c"];
    assert_eq!(key.text_of("type"), Some("Text"));
    let lwc = default_dir().join("lwc/cashloopPaymentLink");
    let js = read(&lwc.join("cashloopPaymentLink.js"));
    assert!(
        js.contains("import createLink from '@salesforce/apex/CashloopPaymentLinks.createLink';")
    );
    assert!(js.contains("createLink({ opportunityId: this.recordId })"));
    assert!(js.contains("@api recordId;"));
    let html = read(&lwc.join("cashloopPaymentLink.html"));
    assert!(html.contains("onclick={handleOpen}") && js.contains("async handleOpen()"));
    let meta = parse_metadata(
        &read(&lwc.join("cashloopPaymentLink.js-meta.xml")),
        "LightningComponentBundle",
    )
    .unwrap();
    assert_eq!(meta.flag("isExposed").unwrap(), Some(true));
    let objects: Vec<&str> = meta
        .all("targetConfigs")
        .flat_map(|t| t.all("targetConfig"))
        .flat_map(|t| t.all("objects"))
        .flat_map(|o| o.all("object"))
        .map(|o| o.text.trim())
        .collect();
    assert_eq!(objects, ["Opportunity"]);
    let test = apex("classes/CashloopPaymentLinksTest.cls");
    assert!(test.contains("'callout:Cashloop/v1/payment_links'"));
    let perms = parse_metadata(
        &read(&default_dir().join("permissionsets/Cashloop_Payment_Links.permissionset-meta.xml")),
        "PermissionSet",
    )
    .unwrap();
    assert!(
        perms
            .all("classAccesses")
            .any(|c| c.text_of("apexClass") == Some("CashloopPaymentLinks"))
    );
}

/// `Foo__c` / `Foo__mdt` identifiers in Apex source.
fn custom_names(source: &str) -> BTreeSet<String> {
    source
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.ends_with("__c") || w.ends_with("__mdt"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn apex_names_only_fields_and_objects_of_the_package() {
    let fields = package_fields();
    let known: BTreeSet<String> = fields
        .iter()
        .flat_map(|(object, names)| std::iter::once(object.clone()).chain(names.keys().cloned()))
        .collect();
    let mut used = BTreeSet::new();
    for path in walk(&default_dir()) {
        let name = path.to_string_lossy();
        if name.ends_with(".cls") || name.ends_with(".trigger") {
            used.extend(custom_names(&read(&path)));
        }
    }
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "Apex names {unknown:?}, not in the package"
    );
    for name in ["Cashloop_Settings__mdt", "Event_Secret__c", "Enabled__c"] {
        assert!(used.contains(name), "the Apex does not read {name}");
    }
}

/// The value of `static final <type> <name> = <literal>;` in Apex source: a string literal
/// (unescaped) or a Long literal (`123L`).
fn apex_constant(source: &str, name: &str) -> String {
    let marker = format!(" {name} = ");
    let line = source
        .lines()
        .find(|l| l.contains("static final") && l.contains(&marker))
        .unwrap_or_else(|| panic!("no constant {name}"));
    let value = &line[line.find(&marker).unwrap() + marker.len()..];
    if let Some(digits) = value.strip_suffix("L;") {
        return digits.to_owned();
    }
    let mut chars = value
        .strip_prefix('\'')
        .unwrap_or_else(|| panic!("{name}: not a literal"))
        .chars();
    let mut out = String::new();
    loop {
        match chars.next() {
            Some('\'') => break,
            Some('\\') => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(c @ ('\'' | '\\' | '"')) => out.push(c),
                other => panic!("{name}: escape \\{other:?} not handled"),
            },
            Some(c) => out.push(c),
            None => panic!("{name}: unterminated literal"),
        }
    }
    assert_eq!(chars.as_str(), ";", "{name}: one literal per line");
    out
}

struct TestVector {
    t: i64,
    secret_hex: String,
    record_id: String,
    body: String,
    signature: String,
}

impl fmt::Debug for TestVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={} body={}", self.t, self.body)
    }
}

fn test_vector() -> TestVector {
    let source = apex("classes/CashloopEventsTest.cls");
    TestVector {
        t: apex_constant(&source, "VECTOR_T").parse().unwrap(),
        secret_hex: apex_constant(&source, "VECTOR_SECRET_HEX"),
        record_id: apex_constant(&source, "VECTOR_RECORD_ID"),
        body: apex_constant(&source, "VECTOR_BODY"),
        signature: apex_constant(&source, "VECTOR_SIGNATURE"),
    }
}

#[test]
fn the_apex_test_vector_is_cashloops_signature() {
    let v = test_vector();
    let key = FingerprintKey::from_hex(1, &v.secret_hex).unwrap();
    assert_eq!(
        gateway::webhooks::signature(&key, v.t, v.body.as_bytes()),
        v.signature,
        "{v:?}"
    );
    assert!(gateway::webhooks::verify(
        &key,
        &v.signature,
        v.body.as_bytes(),
        v.t,
        0
    ));
    // The Apex test also checks this same constant against CashloopSignature.header, so Apex
    // and Rust agree through it.
    assert!(
        apex("classes/CashloopEventsTest.cls").contains(
            "Assert.areEqual(VECTOR_SIGNATURE, CashloopSignature.header(VECTOR_T, VECTOR_BODY, VECTOR_SECRET_HEX));"
        )
    );
}

/// Top-level keys of a JSON object in the order they are written.
fn key_order(json: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(json).unwrap().0
}

#[tokio::test]
async fn the_apex_body_has_the_simulators_event_shape() {
    let v = test_vector();
    let apex: serde_json::Value = serde_json::from_str(&v.body).unwrap();

    let sim = Simulator::start(SimulatorConfig::default()).await;
    let ids = sim
        .insert_as_user(
            "Opportunity",
            &[Record::new("Opportunity")
                .with("Name", "Won")
                .with("StageName", "Closed Won")
                .with("CloseDate", "2026-12-31")],
        )
        .unwrap();
    let sent = sim.events_sent();
    assert_eq!(sent.len(), 1);
    let simulated: serde_json::Value = serde_json::from_str(&sent[0].body).unwrap();

    // Same keys in the same order, compact like serde_json's output.
    assert_eq!(key_order(&v.body), key_order(&sent[0].body));
    assert_eq!(
        v.body,
        serde_json::to_string(&apex).unwrap(),
        "compact, sorted"
    );
    for key in ["object", "stage"] {
        assert_eq!(apex[key], simulated[key], "{key}");
    }
    assert_eq!(simulated["record_id"], ids[0].as_str());
    assert_eq!(apex["record_id"], v.record_id.as_str());
    // occurred_at: RFC 3339 UTC with milliseconds, like the simulator's.
    let occurred = |j: &serde_json::Value| j["occurred_at"].as_str().unwrap().to_owned();
    let (a, s) = (occurred(&apex), occurred(&simulated));
    assert_eq!(
        (a.len(), a.ends_with('Z')),
        (s.len(), s.ends_with('Z')),
        "{a} vs {s}"
    );
    let at = chrono::DateTime::parse_from_rfc3339(&a).unwrap();
    // event_id: record id ':' LastModifiedDate in epoch milliseconds; what the server accepts.
    let event_id = apex["event_id"].as_str().unwrap();
    assert_eq!(
        event_id,
        format!("{}:{}", v.record_id, at.timestamp_millis())
    );
    assert!(event_id.len() <= 255 && event_id.bytes().all(|b| b.is_ascii_graphic()));
}
