//! The simulated company: records per object, the write rules and the query subset.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::intacct::wire::ErrorDetail;
use crate::intacct::xml::Element;

/// One object the simulator knows.
#[derive(Clone, Copy, Debug)]
pub struct ObjectSpec {
    pub name: &'static str,
    /// The natural key (unique when present); empty: RECORDNO only.
    pub key: &'static str,
    /// Required fields, `/` for nested ones.
    pub required: &'static [&'static str],
    /// How Intacct names the object in messages.
    pub label: &'static str,
}

pub const OBJECTS: &[ObjectSpec] = &[
    ObjectSpec {
        name: "CUSTOMER",
        key: "CUSTOMERID",
        required: &["CUSTOMERID", "NAME", "DISPLAYCONTACT/PRINTAS"],
        label: "Customer",
    },
    ObjectSpec {
        name: "CONTACT",
        key: "CONTACTNAME",
        required: &["CONTACTNAME", "PRINTAS"],
        label: "Contact",
    },
    ObjectSpec {
        name: "ITEM",
        key: "ITEMID",
        required: &["ITEMID", "NAME"],
        label: "Item",
    },
    ObjectSpec {
        name: "ARINVOICE",
        key: "RECORDID",
        required: &["CUSTOMERID"],
        label: "Invoice",
    },
    ObjectSpec {
        name: "ARPYMT",
        key: "",
        required: &["CUSTOMERID", "PAYMENTMETHOD", "RECEIPTDATE"],
        label: "AR Payment",
    },
    ObjectSpec {
        name: "SODOCUMENT",
        key: "DOCID",
        required: &["DOCPARID", "CUSTVENDID"],
        label: "Document",
    },
    ObjectSpec {
        name: "ARADJUSTMENT",
        key: "RECORDID",
        required: &["CUSTOMERID"],
        label: "Adjustment",
    },
    ObjectSpec {
        name: "VENDOR",
        key: "VENDORID",
        required: &["VENDORID", "NAME", "DISPLAYCONTACT/PRINTAS"],
        label: "Vendor",
    },
    ObjectSpec {
        name: "APBILL",
        key: "RECORDID",
        required: &["VENDORID"],
        label: "Bill",
    },
    ObjectSpec {
        name: "CURRENCY",
        key: "CODE",
        required: &["CODE"],
        label: "Currency",
    },
];

/// A function's errors.
#[derive(Debug)]
pub struct FnError(pub Vec<ErrorDetail>);

impl FnError {
    pub fn one(errorno: &str, description2: &str) -> FnError {
        FnError(vec![ErrorDetail::new(errorno, "", description2, "")])
    }
}

fn spec(object: &str) -> Result<&'static ObjectSpec, FnError> {
    OBJECTS
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(object))
        .ok_or_else(|| {
            FnError::one(
                "DL02000001",
                &format!("Object definition {object} not found"),
            )
        })
}

fn now_datetime() -> String {
    Utc::now().format("%m/%d/%Y %H:%M:%S").to_string()
}

fn field<'a>(r: &'a Element, path: &str) -> Option<&'a str> {
    r.find(path).map(|e| e.text.as_str())
}

/// One change to the company, kept so a failed function (or a rolled back
/// `transaction="true"` operation) can be undone in reverse order.
#[derive(Clone, Debug)]
enum Undo {
    Inserted(&'static str, u64),
    /// The previous version of a changed record.
    Changed(&'static str, u64, Element),
    Removed(&'static str, u64, Element),
    /// The previous value of a document-number sequence.
    Sequence(String, u64),
}

/// A point in the undo log to roll back to.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    log_len: usize,
    next_recordno: u64,
}

#[derive(Clone, Debug)]
pub struct Company {
    records: BTreeMap<&'static str, BTreeMap<u64, Element>>,
    /// Per object: natural-key value → RECORDNO, kept true on every insert, change and
    /// removal (and their undo).
    index: HashMap<&'static str, HashMap<String, u64>>,
    next_recordno: u64,
    /// Changes since the last [`Company::commit`] (one request's worth).
    undo: Vec<Undo>,
    /// Last document number used per transaction definition / sequence.
    sequences: HashMap<String, u64>,
    /// The top level's base currency.
    base_currency: String,
    /// Base currency per entity.
    entity_currency: HashMap<String, String>,
    /// "Intacct Daily Rate": (from, to) → rate.
    rates: HashMap<(String, String), Decimal>,
}

impl Default for Company {
    fn default() -> Company {
        Company::new()
    }
}

fn object_name(object: &str) -> &'static str {
    spec(object).map(|s| s.name).unwrap_or("CUSTOMER")
}

fn key_of(object: &'static str, rec: &Element) -> Option<String> {
    let spec = spec(object).ok()?;
    if spec.key.is_empty() {
        return None;
    }
    field(rec, spec.key)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Company {
    pub fn new() -> Company {
        let mut c = Company {
            records: BTreeMap::new(),
            index: HashMap::new(),
            next_recordno: 1,
            undo: Vec::new(),
            sequences: HashMap::new(),
            base_currency: "USD".into(),
            entity_currency: [("US", "USD"), ("UK", "GBP")]
                .into_iter()
                .map(|(e, c)| (e.to_owned(), c.to_owned()))
                .collect(),
            rates: default_exchange_rates()
                .into_iter()
                .map(|(f, t, r)| ((f, t), r))
                .collect(),
        };
        for (code, name) in [
            ("USD", "US Dollar"),
            ("EUR", "Euro"),
            ("GBP", "Pound Sterling"),
            ("CAD", "Canadian Dollar"),
        ] {
            c.insert_raw(
                "CURRENCY",
                Element::new("CURRENCY")
                    .with_leaf("CODE", code)
                    .with_leaf("NAME", name),
                "",
            );
        }
        c.commit();
        c
    }

    // ---- storage primitives: every change goes through these (index + undo log) ----

    fn index_add(&mut self, object: &'static str, no: u64, rec: &Element) {
        if let Some(k) = key_of(object, rec) {
            self.index.entry(object).or_default().insert(k, no);
        }
    }

    fn index_remove(&mut self, object: &'static str, no: u64, rec: &Element) {
        if let Some(k) = key_of(object, rec)
            && let Some(m) = self.index.get_mut(object)
            && m.get(&k) == Some(&no)
        {
            m.remove(&k);
        }
    }

    fn alloc_recordno(&mut self) -> u64 {
        let no = self.next_recordno;
        self.next_recordno += 1;
        no
    }

    fn put_new(&mut self, object: &'static str, no: u64, rec: Element) {
        self.index_add(object, no, &rec);
        self.records.entry(object).or_default().insert(no, rec);
        self.undo.push(Undo::Inserted(object, no));
    }

    /// Replaces a stored record, keeping the previous version for undo.
    fn replace(&mut self, object: &'static str, no: u64, rec: Element) {
        let new_key = key_of(object, &rec);
        let old = self.records.entry(object).or_default().insert(no, rec);
        if let Some(old) = old {
            if key_of(object, &old) != new_key {
                self.index_remove(object, no, &old);
            }
            self.undo.push(Undo::Changed(object, no, old));
        } else {
            self.undo.push(Undo::Inserted(object, no));
        }
        if let Some(k) = new_key {
            self.index.entry(object).or_default().insert(k, no);
        }
    }

    /// Changes a stored record in place (through [`Company::replace`]); bumps WHENMODIFIED.
    fn modify(&mut self, object: &'static str, no: u64, f: impl FnOnce(&mut Element)) -> bool {
        let Some(mut rec) = self.get(object, no).cloned() else {
            return false;
        };
        f(&mut rec);
        rec.set_leaf("WHENMODIFIED", now_datetime());
        self.replace(object, no, rec);
        true
    }

    fn remove(&mut self, object: &'static str, no: u64) {
        let old = self.records.get_mut(object).and_then(|m| m.remove(&no));
        if let Some(old) = old {
            self.index_remove(object, no, &old);
            self.undo.push(Undo::Removed(object, no, old));
        }
    }

    fn get(&self, object: &str, no: u64) -> Option<&Element> {
        self.records.get(object_name(object))?.get(&no)
    }

    /// The next number of a document sequence (1, 2, …), undone with the rest.
    fn next_in_sequence(&mut self, name: &str) -> u64 {
        let prev = self.sequences.get(name).copied().unwrap_or(0);
        self.undo.push(Undo::Sequence(name.to_owned(), prev));
        self.sequences.insert(name.to_owned(), prev + 1);
        prev + 1
    }

    /// Where the undo log stands now.
    pub fn mark(&self) -> Mark {
        Mark {
            log_len: self.undo.len(),
            next_recordno: self.next_recordno,
        }
    }

    /// Undoes every change made since `mark`, newest first.
    pub fn rollback(&mut self, mark: Mark) {
        while self.undo.len() > mark.log_len {
            let Some(entry) = self.undo.pop() else { break };
            match entry {
                Undo::Inserted(object, no) => {
                    if let Some(rec) = self.records.get_mut(object).and_then(|m| m.remove(&no)) {
                        self.index_remove(object, no, &rec);
                    }
                }
                Undo::Changed(object, no, old) | Undo::Removed(object, no, old) => {
                    let current = self.records.entry(object).or_default().remove(&no);
                    if let Some(cur) = current {
                        self.index_remove(object, no, &cur);
                    }
                    self.index_add(object, no, &old);
                    self.records.entry(object).or_default().insert(no, old);
                }
                Undo::Sequence(name, prev) => {
                    self.sequences.insert(name, prev);
                }
            }
        }
        self.next_recordno = mark.next_recordno;
    }

    /// Forgets the undo log: what was written stays.
    pub fn commit(&mut self) {
        self.undo.clear();
    }

    /// Stores a record as is (plus RECORDNO and stamps); returns its RECORDNO.
    pub fn insert_raw(&mut self, object: &str, rec: Element, location: &str) -> u64 {
        let no = self.alloc_recordno();
        self.insert_at(object, no, rec, location);
        no
    }

    /// Stores a record under a RECORDNO from [`Company::alloc_recordno`].
    fn insert_at(&mut self, object: &str, no: u64, mut rec: Element, location: &str) {
        let name = object_name(object);
        rec.name = name.to_owned();
        rec.children.retain(|c| !c.is("RECORDNO"));
        rec.children
            .insert(0, Element::leaf("RECORDNO", no.to_string()));
        let stamp = now_datetime();
        if rec.child("WHENCREATED").is_none() {
            rec.set_leaf("WHENCREATED", &stamp);
        }
        rec.set_leaf("WHENMODIFIED", stamp);
        if rec.child("MEGAENTITYID").is_none() {
            rec.set_leaf("MEGAENTITYID", location);
        }
        self.put_new(name, no, rec);
    }

    pub fn all(&self, object: &str) -> Vec<Element> {
        let Ok(spec) = spec(object) else {
            return Vec::new();
        };
        self.records
            .get(spec.name)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The RECORDNO of the record whose natural key is `value` (index lookup).
    fn by_key(&self, spec: &ObjectSpec, value: &str) -> Option<u64> {
        if spec.key.is_empty() || value.is_empty() {
            return None;
        }
        self.index.get(spec.name)?.get(value).copied()
    }

    /// Records matching a readByQuery `query`, projected to `fields`, optionally with the
    /// lowercase element name readByQuery uses.
    pub fn select(
        &self,
        object: &str,
        query: &str,
        fields: &str,
        lowercase: bool,
    ) -> Result<Vec<Element>, FnError> {
        let spec = spec(object)?;
        let conds = parse_query(query)?;
        let Some(rows) = self.records.get(spec.name) else {
            return Ok(Vec::new());
        };
        // An equality on the natural key or RECORDNO is answered from the index.
        let point = conds.iter().find_map(|c| {
            (c.op == Op::Eq).then_some(())?;
            if !spec.key.is_empty() && c.field.eq_ignore_ascii_case(spec.key) {
                Some(self.by_key(spec, &c.value))
            } else if c.field.eq_ignore_ascii_case("RECORDNO") {
                Some(c.value.trim().parse::<u64>().ok())
            } else {
                None
            }
        });
        let candidates: Box<dyn Iterator<Item = &Element>> = match point {
            Some(no) => Box::new(no.and_then(|n| rows.get(&n)).into_iter()),
            None => Box::new(rows.values()),
        };
        Ok(candidates
            .filter(|r| conds.iter().all(|c| c.matches(r)))
            .map(|r| project(r, fields, lowercase))
            .collect())
    }

    /// The `query` function: `equalto` filters (alone or under `and`), orderby, offset.
    pub fn query(&self, body: &Element) -> Result<Element, FnError> {
        let object = body.text_at("object").unwrap_or_default();
        let spec = spec(object)?;
        let fields: Vec<&str> = body
            .child("select")
            .map(|s| s.children_named("field").map(|f| f.text.as_str()).collect())
            .unwrap_or_default();
        if fields.is_empty() {
            return Err(FnError::one(
                "Query Failed",
                "select must name at least one field",
            ));
        }
        let mut conds = Vec::new();
        if let Some(filter) = body.child("filter") {
            for op in &filter.children {
                collect_filter(op, &mut conds)?;
            }
        }
        let pagesize: usize = body
            .text_at("pagesize")
            .unwrap_or("100")
            .parse()
            .map_err(|_| FnError::one("Query Failed", "Invalid pagesize"))?;
        let offset: usize = body
            .text_at("offset")
            .unwrap_or("0")
            .parse()
            .map_err(|_| FnError::one("Query Failed", "Invalid offset"))?;
        if !(1..=2_000).contains(&pagesize) {
            return Err(FnError::one(
                "Query Failed",
                "pagesize must be between 1 and 2000",
            ));
        }
        let mut rows: Vec<&Element> = self
            .records
            .get(spec.name)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|r| conds.iter().all(|c| c.matches(r)))
            .collect();
        if let Some(ob) = body.child("orderby") {
            for order in ob
                .children_named("order")
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let f = order.text_at("field").unwrap_or_default().to_owned();
                let desc = order.child("descending").is_some();
                rows.sort_by(|a, b| {
                    let o = compare(
                        field(a, &f).unwrap_or_default(),
                        field(b, &f).unwrap_or_default(),
                    );
                    if desc { o.reverse() } else { o }
                });
            }
        }
        let total = rows.len();
        let page: Vec<Element> = rows
            .into_iter()
            .skip(offset)
            .take(pagesize)
            .map(|r| project(r, &fields.join(","), false))
            .collect();
        let remaining = total.saturating_sub(offset + page.len());
        let mut data = Element::new("data")
            .with_attr("listtype", spec.name)
            .with_attr("totalcount", total.to_string())
            .with_attr("offset", offset.to_string())
            .with_attr("count", page.len().to_string())
            .with_attr("numremaining", remaining.to_string());
        data.children = page;
        Ok(data)
    }

    pub fn read(&self, object: &str, keys: &str, fields: &str) -> Result<Vec<Element>, FnError> {
        let spec = spec(object)?;
        let map = self.records.get(spec.name);
        let mut out = Vec::new();
        for k in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let no: u64 = k
                .parse()
                .map_err(|_| FnError::one("BL01001973", &format!("Invalid key {k}")))?;
            if let Some(r) = map.and_then(|m| m.get(&no)) {
                out.push(project(r, fields, false));
            }
        }
        Ok(out)
    }

    /// Generic create / update of several records; the function is all-or-nothing here.
    pub fn write(
        &mut self,
        create: bool,
        records: &[Element],
        location: &str,
    ) -> Result<Vec<Element>, FnError> {
        let mark = self.mark();
        let result = self.write_inner(create, records, location);
        if result.is_err() {
            self.rollback(mark);
        }
        result
    }

    fn write_inner(
        &mut self,
        create: bool,
        records: &[Element],
        location: &str,
    ) -> Result<Vec<Element>, FnError> {
        let verb = if create { "create" } else { "update" };
        let mut written = Vec::new();
        for rec in records {
            let spec = spec(&rec.name)?;
            let could_not = |label: &str| {
                [
                    ErrorDetail::new(
                        "BL01001973",
                        "",
                        &format!("Could not {verb} {} record!", label.to_ascii_lowercase()),
                        "",
                    ),
                    ErrorDetail::new(
                        "BL01001973",
                        "",
                        &format!("Could not {verb} {label} record!"),
                        "",
                    ),
                ]
            };
            let no = if create {
                for req in spec.required {
                    if field(rec, req).is_none_or(str::is_empty) {
                        let mut errors = vec![ErrorDetail::new(
                            "PL03000130",
                            "",
                            &format!("Required field {} is missing", req.replace('/', ".")),
                            &format!("Provide a value for {}.", req.replace('/', ".")),
                        )];
                        errors.extend(could_not(spec.label));
                        return Err(FnError(errors));
                    }
                }
                let key = if spec.key.is_empty() {
                    ""
                } else {
                    field(rec, spec.key).unwrap_or_default()
                };
                if self.by_key(spec, key).is_some() {
                    let mut errors = vec![ErrorDetail::new(
                        "BL34000061",
                        "",
                        &format!(
                            "Another {} with the given value(s) {key}  already exists",
                            spec.label
                        ),
                        "Use a unique value instead.",
                    )];
                    errors.extend(could_not(spec.label));
                    return Err(FnError(errors));
                }
                let prepared = match spec.name {
                    "ARPYMT" => self.prepare_payment(rec, location),
                    "APBILL" => self.prepare_bill(rec, location),
                    _ => Ok(rec.clone()),
                };
                let rec = prepared.map_err(|msg| {
                    let mut errors = vec![ErrorDetail::new("BL01001973", "", &msg, "")];
                    errors.extend(could_not(spec.label));
                    FnError(errors)
                })?;
                self.insert_raw(spec.name, rec, location)
            } else {
                let by_no = field(rec, "RECORDNO").and_then(|n| n.parse::<u64>().ok());
                let key = if spec.key.is_empty() {
                    ""
                } else {
                    field(rec, spec.key).unwrap_or_default()
                };
                let found = by_no
                    .filter(|n| {
                        self.records
                            .get(spec.name)
                            .is_some_and(|m| m.contains_key(n))
                    })
                    .or_else(|| self.by_key(spec, key));
                let Some(no) = found else {
                    let (kf, kv) = match by_no {
                        Some(n) => ("RECORDNO".to_owned(), n.to_string()),
                        None => (spec.key.to_owned(), key.to_owned()),
                    };
                    let mut errors = vec![ErrorDetail::new(
                        "BL01001973",
                        "",
                        &format!("Cannot update non-existing {} with {kf}={kv}.", spec.name),
                        "",
                    )];
                    errors.extend(could_not(spec.label));
                    return Err(FnError(errors));
                };
                if let Some(k) = key_of(spec.name, rec)
                    && self.by_key(spec, &k).is_some_and(|other| other != no)
                {
                    let mut errors = vec![ErrorDetail::new(
                        "BL34000061",
                        "",
                        &format!(
                            "Another {} with the given value(s) {k}  already exists",
                            spec.label
                        ),
                        "Use a unique value instead.",
                    )];
                    errors.extend(could_not(spec.label));
                    return Err(FnError(errors));
                }
                self.modify(spec.name, no, |stored| {
                    for c in &rec.children {
                        if c.is("RECORDNO") {
                            continue;
                        }
                        match stored.child_mut(&c.name) {
                            Some(existing) => *existing = c.clone(),
                            None => stored.children.push(c.clone()),
                        }
                    }
                });
                no
            };
            let stored = &self.records[spec.name][&no];
            let mut out =
                Element::new(spec.name.to_ascii_lowercase()).with_leaf("RECORDNO", no.to_string());
            if !spec.key.is_empty() {
                out = out.with_leaf(spec.key, field(stored, spec.key).unwrap_or_default());
            }
            written.push(out);
        }
        Ok(written)
    }

    pub fn delete(&mut self, object: &str, keys: &str) -> Result<(), FnError> {
        let spec = spec(object)?;
        let mut nos = Vec::new();
        for k in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let no = k.parse::<u64>().ok().filter(|n| {
                self.records
                    .get(spec.name)
                    .is_some_and(|m| m.contains_key(n))
            });
            let Some(no) = no else {
                return Err(FnError::one(
                    "BL01001973",
                    &format!(
                        "Cannot delete non-existing {} with RECORDNO={k}.",
                        spec.name
                    ),
                ));
            };
            nos.push(no);
        }
        for n in nos {
            self.remove(spec.name, n);
        }
        Ok(())
    }

    /// Legacy `create_invoice`: an ARINVOICE with its lines; returns the RECORDNO (`<key>`).
    pub fn create_invoice(&mut self, body: &Element, location: &str) -> Result<u64, FnError> {
        let fail = |msg: &str| could_not("Invoice", msg);
        let customer_id = body.text_at("customerid").unwrap_or_default();
        let customer = self.customer(customer_id).map_err(|m| fail(&m))?;
        let created = legacy_date(body, "datecreated")
            .map_err(|m| fail(&m))?
            .ok_or_else(|| fail("Required field datecreated is missing"))?;
        let due = legacy_date(body, "datedue").map_err(|m| fail(&m))?;
        let money = self
            .legacy_money(body, location, created)
            .map_err(|m| fail(&m))?;
        let lines: Vec<&Element> = body
            .child("invoiceitems")
            .map(|i| i.children_named("lineitem").collect())
            .unwrap_or_default();
        let lines =
            gl_lines(&lines, "An invoice needs at least one line item").map_err(|m| fail(&m))?;
        let invoice_no = body.text_at("invoiceno").unwrap_or_default();
        if !invoice_no.is_empty() && self.by_key(spec("ARINVOICE")?, invoice_no).is_some() {
            return Err(duplicate("Invoice", invoice_no, "Invoice"));
        }
        let header = InvoiceHeader {
            customer_id,
            customer_name: field(&customer, "NAME").unwrap_or_default(),
            record_id: invoice_no,
            created,
            due,
            term_name: body.text_at("termname").unwrap_or_default(),
            description: body.text_at("description").unwrap_or_default(),
            module_key: "4.AR",
        };
        Ok(self.insert_invoice(&header, &money, &lines, location))
    }

    /// Stores an ARINVOICE (RECORDID = its RECORDNO when no number was given).
    fn insert_invoice(
        &mut self,
        h: &InvoiceHeader<'_>,
        money: &Money,
        lines: &[GlLine],
        location: &str,
    ) -> u64 {
        let mut items = Element::new("ARINVOICEITEMS");
        let mut total = Decimal::ZERO;
        for (i, l) in lines.iter().enumerate() {
            total += l.amount;
            items = items.with(
                Element::new("arinvoiceitem")
                    .with_leaf("LINE_NO", i.to_string())
                    .with_leaf("ACCOUNTNO", &l.account)
                    .with_leaf("TRX_AMOUNT", cents(l.amount).to_string())
                    .with_leaf("AMOUNT", money.to_base(l.amount).to_string())
                    .with_leaf("CURRENCY", &money.currency)
                    .with_leaf("BASECURR", &money.basecurr)
                    .with_leaf("EXCHANGE_RATE", money.rate.normalize().to_string())
                    .with_leaf("ENTRYDESCRIPTION", &l.memo)
                    .with_leaf("LOCATIONID", &l.location)
                    .with_leaf("DEPARTMENTID", &l.department),
            );
        }
        let no = self.alloc_recordno();
        let record_id = if h.record_id.is_empty() {
            no.to_string()
        } else {
            h.record_id.to_owned()
        };
        let mut rec = Element::new("ARINVOICE")
            .with_leaf("RECORDID", record_id)
            .with_leaf("RECORDTYPE", "ri")
            .with_leaf("CUSTOMERID", h.customer_id)
            .with_leaf("CUSTOMERNAME", h.customer_name)
            .with_leaf("STATE", "Posted")
            .with_leaf("DESCRIPTION", h.description)
            .with_leaf("TERMNAME", h.term_name)
            .with_leaf("WHENCREATED", h.created.format("%m/%d/%Y").to_string())
            .with_leaf(
                "WHENDUE",
                h.due
                    .map(|d| d.format("%m/%d/%Y").to_string())
                    .unwrap_or_default(),
            )
            .with_leaf("WHENPAID", "");
        money.stamp(&mut rec);
        set_totals(&mut rec, money.rate, total, Decimal::ZERO);
        rec = rec.with_leaf("MODULEKEY", h.module_key).with(items);
        self.insert_at("ARINVOICE", no, rec, location);
        no
    }

    /// The customer record, or Intacct's "Invalid Customer" text.
    fn customer(&self, customer_id: &str) -> Result<Element, String> {
        self.by_key(spec("CUSTOMER").map_err(|_| "no CUSTOMER")?, customer_id)
            .and_then(|no| self.get("CUSTOMER", no))
            .cloned()
            .ok_or_else(|| format!("Invalid Customer {customer_id} specified."))
    }

    /// Legacy `create_sotransaction`: an SODOCUMENT (and, for a Sales Invoice, its ARINVOICE);
    /// returns the document id (`Sales Order-SO-00001`).
    pub fn create_sotransaction(
        &mut self,
        body: &Element,
        location: &str,
    ) -> Result<String, FnError> {
        let fail = |msg: &str| could_not("Document", msg);
        let definition = body.text_at("transactiontype").unwrap_or_default();
        let Some((_, prefix)) = SALES_DEFINITIONS
            .iter()
            .find(|(name, _)| *name == definition)
        else {
            return Err(fail(&format!(
                "Invalid transaction definition {definition}"
            )));
        };
        let created = legacy_date(body, "datecreated")
            .map_err(|m| fail(&m))?
            .ok_or_else(|| fail("Required field datecreated is missing"))?;
        let due = legacy_date(body, "datedue").map_err(|m| fail(&m))?;
        let customer_id = body.text_at("customerid").unwrap_or_default();
        let customer = self.customer(customer_id).map_err(|m| fail(&m))?;
        let money = self
            .legacy_money(body, location, created)
            .map_err(|m| fail(&m))?;
        let lines: Vec<&Element> = body
            .child("sotransitems")
            .map(|i| i.children_named("sotransitem").collect())
            .unwrap_or_default();
        if lines.is_empty() {
            return Err(fail("A transaction needs at least one line item"));
        }
        let item_spec = spec("ITEM")?;
        let mut entries = Element::new("SODOCUMENTENTRIES");
        let mut gl = Vec::new();
        let mut total = Decimal::ZERO;
        for (i, l) in lines.iter().enumerate() {
            let n = i + 1;
            let item_id = l.text_at("itemid").unwrap_or_default();
            let item = self
                .by_key(item_spec, item_id)
                .and_then(|no| self.get("ITEM", no))
                .ok_or_else(|| fail(&format!("Line {n}: Invalid Item {item_id} specified.")))?;
            let quantity = l
                .text_at("quantity")
                .and_then(|q| q.trim().parse::<Decimal>().ok())
                .filter(|q| *q > Decimal::ZERO)
                .ok_or_else(|| {
                    fail(&format!(
                        "Line {n}: Invalid quantity {}",
                        l.text_at("quantity").unwrap_or_default()
                    ))
                })?;
            let price = match l.text_at("price") {
                Some(p) => p
                    .trim()
                    .parse::<Decimal>()
                    .ok()
                    .filter(|p| *p >= Decimal::ZERO)
                    .ok_or_else(|| fail(&format!("Line {n}: Invalid price {p}")))?,
                None => field(item, "BASEPRICE")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_default(),
            };
            let value = cents(quantity * price);
            total += value;
            let text = |name: &str| l.text_at(name).unwrap_or_default().to_owned();
            entries = entries.with(
                Element::new("sodocumententry")
                    .with_leaf("LINE_NO", i.to_string())
                    .with_leaf("ITEMID", item_id)
                    .with_leaf("ITEMNAME", field(item, "NAME").unwrap_or_default())
                    .with_leaf("QUANTITY", quantity.to_string())
                    .with_leaf("UNIT", text("unit"))
                    .with_leaf("TRX_PRICE", price.to_string())
                    .with_leaf("PRICE", money.to_base(price).to_string())
                    .with_leaf("TRX_VALUE", value.to_string())
                    .with_leaf("TOTAL", money.to_base(value).to_string())
                    .with_leaf("LOCATIONID", text("locationid"))
                    .with_leaf("DEPARTMENTID", text("departmentid"))
                    .with_leaf("MEMO", text("memo")),
            );
            gl.push(GlLine {
                account: field(item, "INCOMEGLACCOUNT")
                    .filter(|a| !a.is_empty())
                    .unwrap_or(DEFAULT_SALES_ACCOUNT)
                    .to_owned(),
                amount: value,
                memo: text("memo"),
                location: text("locationid"),
                department: text("departmentid"),
            });
        }
        let doc_spec = spec("SODOCUMENT")?;
        let docno = match body.text_at("documentno").filter(|d| !d.is_empty()) {
            Some(d) => d.to_owned(),
            None => loop {
                let n = self.next_in_sequence(definition);
                let candidate = format!("{prefix}{n:05}");
                if self
                    .by_key(doc_spec, &format!("{definition}-{candidate}"))
                    .is_none()
                {
                    break candidate;
                }
            },
        };
        let docid = format!("{definition}-{docno}");
        if self.by_key(doc_spec, &docid).is_some() {
            return Err(duplicate("document", &docid, "Document"));
        }
        // Converting another document (an order into an invoice): it must exist, belong to the
        // customer and not be converted already.
        let created_from = body
            .text_at("createdfrom")
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if let Some(src) = &created_from {
            let src_no = self
                .by_key(doc_spec, src)
                .ok_or_else(|| fail(&format!("Invalid createdfrom {src} specified.")))?;
            let src_doc = self
                .get("SODOCUMENT", src_no)
                .cloned()
                .unwrap_or_else(|| Element::new("SODOCUMENT"));
            if field(&src_doc, "CUSTVENDID") != Some(customer_id) {
                return Err(fail(&format!("{src} belongs to another customer")));
            }
            if field(&src_doc, "STATE") == Some("Converted") {
                return Err(fail(&format!("{src} is already converted")));
            }
        }
        let state = body
            .text_at("state")
            .filter(|s| !s.is_empty())
            .unwrap_or("Pending")
            .to_owned();
        let customer_name = field(&customer, "NAME").unwrap_or_default().to_owned();
        let mut prrecordkey = String::new();
        if definition == "Sales Invoice" && state != "Draft" {
            if self.by_key(spec("ARINVOICE")?, &docno).is_some() {
                return Err(duplicate("Invoice", &docno, "Document"));
            }
            let header = InvoiceHeader {
                customer_id,
                customer_name: &customer_name,
                record_id: &docno,
                created,
                due,
                term_name: body.text_at("termname").unwrap_or_default(),
                description: body.text_at("message").unwrap_or_default(),
                module_key: "8.SO",
            };
            prrecordkey = self
                .insert_invoice(&header, &money, &gl, location)
                .to_string();
        }
        let text = |name: &str| body.text_at(name).unwrap_or_default().to_owned();
        let mut rec = Element::new("SODOCUMENT")
            .with_leaf("DOCID", &docid)
            .with_leaf("DOCNO", &docno)
            .with_leaf("DOCPARID", definition)
            .with_leaf("CUSTVENDID", customer_id)
            .with_leaf("CUSTVENDNAME", &customer_name)
            .with_leaf("STATE", &state)
            .with_leaf("WHENCREATED", created.format("%m/%d/%Y").to_string())
            .with_leaf(
                "WHENDUE",
                due.map(|d| d.format("%m/%d/%Y").to_string())
                    .unwrap_or_default(),
            )
            .with_leaf("PONUMBER", text("referenceno"))
            .with_leaf("TERMNAME", text("termname"))
            .with_leaf("MESSAGE", text("message"));
        money.stamp(&mut rec);
        rec = rec
            .with_leaf("TRX_SUBTOTAL", total.to_string())
            .with_leaf("SUBTOTAL", money.to_base(total).to_string())
            .with_leaf("TRX_TOTAL", total.to_string())
            .with_leaf("TOTAL", money.to_base(total).to_string());
        set_totals(&mut rec, money.rate, total, Decimal::ZERO);
        rec = rec
            .with_leaf("PRRECORDKEY", prrecordkey)
            .with_leaf("CREATEDFROM", created_from.clone().unwrap_or_default())
            .with(entries);
        self.insert_raw("SODOCUMENT", rec, location);
        if let Some(src) = &created_from
            && let Some(no) = self.by_key(doc_spec, src)
        {
            self.modify("SODOCUMENT", no, |d| d.set_leaf("STATE", "Converted"));
        }
        Ok(docid)
    }

    /// Applies amounts (transaction currency) to invoices of `customer_id` in `currency`:
    /// TRX_TOTALPAID / TRX_TOTALDUE move, base amounts follow (see [`set_totals`]), STATE
    /// becomes Partially Paid / Paid, WHENMODIFIED is bumped. `what` names the amount in
    /// messages ("Payment", "Credit").
    fn apply_to_invoices(
        &mut self,
        customer_id: &str,
        currency: &str,
        items: &[(u64, Decimal)],
        paid_on: NaiveDate,
        what: &str,
    ) -> Result<(), String> {
        for &(key, amount) in items {
            let inv = self
                .get("ARINVOICE", key)
                .ok_or_else(|| format!("Invalid invoice RECORDKEY {key}"))?;
            let owner = field(inv, "CUSTOMERID").unwrap_or_default();
            if owner != customer_id {
                return Err(format!(
                    "Invoice {key} belongs to customer {owner}, not to {customer_id}"
                ));
            }
            let inv_currency = field(inv, "CURRENCY").unwrap_or_default();
            if !inv_currency.is_empty() && inv_currency != currency {
                return Err(format!(
                    "The {} currency {currency} does not match the currency {inv_currency} of invoice {key}",
                    what.to_ascii_lowercase()
                ));
            }
            let (entered, paid, rate) = invoice_amounts(inv);
            let due = entered - paid;
            if amount <= Decimal::ZERO {
                return Err(format!(
                    "Invalid {} amount {amount}",
                    what.to_ascii_lowercase()
                ));
            }
            if amount > due {
                return Err(format!(
                    "{what} amount {amount} exceeds the amount due {due}"
                ));
            }
            let paid = paid + amount;
            self.modify("ARINVOICE", key, |inv| {
                set_totals(inv, rate, entered, paid);
                if paid == entered {
                    inv.set_leaf("STATE", "Paid");
                    inv.set_leaf("WHENPAID", paid_on.format("%m/%d/%Y").to_string());
                } else {
                    inv.set_leaf("STATE", "Partially Paid");
                }
            });
        }
        Ok(())
    }

    /// A generic `create` ARPYMT: checks the customer, applies `ARPYMTDETAIL`s with the
    /// same rules as `create_arpayment`, and returns the record to store (with currency
    /// and totals).
    fn prepare_payment(&mut self, rec: &Element, location: &str) -> Result<Element, String> {
        let customer_id = field(rec, "CUSTOMERID").unwrap_or_default();
        let customer = self.customer(customer_id)?;
        let received = field(rec, "RECEIPTDATE")
            .and_then(|d| NaiveDate::parse_from_str(d, "%m/%d/%Y").ok())
            .ok_or("Invalid RECEIPTDATE")?;
        let nonempty = |f: &str| field(rec, f).filter(|v| !v.is_empty());
        let money = self.money(
            location,
            nonempty("BASECURR"),
            nonempty("CURRENCY"),
            nonempty("EXCH_RATE_TYPE_ID"),
            nonempty("EXCHANGE_RATE"),
            received,
        )?;
        let mut items = Vec::new();
        if let Some(details) = rec.child("ARPYMTDETAILS") {
            for d in details.children_named("ARPYMTDETAIL") {
                let key: u64 = field(d, "RECORDKEY")
                    .and_then(|k| k.trim().parse().ok())
                    .ok_or("ARPYMTDETAIL needs a RECORDKEY")?;
                let amount: Decimal = field(d, "TRX_PAYMENTAMOUNT")
                    .and_then(|a| a.trim().parse().ok())
                    .ok_or("Invalid TRX_PAYMENTAMOUNT")?;
                items.push((key, cents(amount)));
            }
        }
        let applied: Decimal = items.iter().map(|(_, a)| *a).sum();
        let total = match nonempty("TRX_AMOUNTTOPAY") {
            Some(a) => a
                .trim()
                .parse::<Decimal>()
                .map_err(|_| format!("Invalid TRX_AMOUNTTOPAY {a}"))?,
            None => applied,
        };
        if applied > total {
            return Err(format!(
                "The payment details total {applied} exceeds the payment amount {total}"
            ));
        }
        self.apply_to_invoices(customer_id, &money.currency, &items, received, "Payment")?;
        let mut out = rec.clone();
        out.set_leaf("CUSTOMERNAME", field(&customer, "NAME").unwrap_or_default());
        if field(&out, "STATE").is_none() {
            out.set_leaf("STATE", "Posted");
        }
        money.stamp(&mut out);
        set_totals(&mut out, money.rate, total, applied);
        Ok(out)
    }

    /// Legacy `create_arpayment`; returns the ARPYMT RECORDNO.
    pub fn create_arpayment(&mut self, body: &Element, location: &str) -> Result<u64, FnError> {
        let fail = |msg: &str| could_not("Payment", msg);
        let customer_id = body.text_at("customerid").unwrap_or_default();
        let customer = self.customer(customer_id).map_err(|m| fail(&m))?;
        let amount_text = body.text_at("paymentamount").unwrap_or_default();
        let amount = amount_text
            .trim()
            .parse::<Decimal>()
            .ok()
            .filter(|a| *a > Decimal::ZERO)
            .map(cents)
            .ok_or_else(|| fail(&format!("Invalid paymentamount {amount_text}")))?;
        let received = legacy_date(body, "datereceived")
            .map_err(|m| fail(&m))?
            .ok_or_else(|| fail("Required field datereceived is missing"))?;
        let money = self
            .legacy_money(body, location, received)
            .map_err(|m| fail(&m))?;
        let mut items = Vec::new();
        for (i, it) in body.children_named("arpaymentitem").enumerate() {
            let key = it.text_at("invoicekey").unwrap_or_default();
            let key: u64 = key
                .trim()
                .parse()
                .map_err(|_| fail(&format!("Item {}: invalid invoicekey {key}", i + 1)))?;
            let a = it.text_at("amount").unwrap_or_default();
            let a: Decimal = a
                .trim()
                .parse()
                .map_err(|_| fail(&format!("Item {}: invalid amount {a}", i + 1)))?;
            items.push((key, cents(a)));
        }
        let applied: Decimal = items.iter().map(|(_, a)| *a).sum();
        if applied > amount {
            return Err(fail(&format!(
                "The payment items total {applied} exceeds the payment amount {amount}"
            )));
        }
        self.apply_to_invoices(customer_id, &money.currency, &items, received, "Payment")
            .map_err(|m| fail(&m))?;
        let text = |name: &str| body.text_at(name).unwrap_or_default().to_owned();
        let mut details = Element::new("ARPYMTDETAILS");
        for (key, a) in &items {
            details = details.with(
                Element::new("ARPYMTDETAIL")
                    .with_leaf("RECORDKEY", key.to_string())
                    .with_leaf("TRX_PAYMENTAMOUNT", a.to_string()),
            );
        }
        let mut rec = Element::new("ARPYMT")
            .with_leaf("CUSTOMERID", customer_id)
            .with_leaf("CUSTOMERNAME", field(&customer, "NAME").unwrap_or_default())
            .with_leaf("PAYMENTMETHOD", text("paymentmethod"))
            .with_leaf("DOCNUMBER", text("refid"))
            .with_leaf("RECEIPTDATE", received.format("%m/%d/%Y").to_string())
            .with_leaf("FINANCIALENTITY", text("bankaccountid"))
            .with_leaf("UNDEPOSITEDACCOUNTNO", text("undepfundsacct"))
            .with_leaf("PRBATCHKEY", text("batchkey"))
            .with_leaf("OVERPAYMENTLOCATIONID", text("overpaylocid"))
            .with_leaf("OVERPAYMENTDEPARTMENTID", text("overpaydeptid"))
            .with_leaf("STATE", "Posted");
        money.stamp(&mut rec);
        set_totals(&mut rec, money.rate, amount, applied);
        rec = rec.with(details);
        Ok(self.insert_raw("ARPYMT", rec, location))
    }

    /// Legacy `create_aradjustment` (positive total: debit memo, negative: credit memo);
    /// returns the ARADJUSTMENT RECORDNO. A credit memo naming an invoice of the customer
    /// (`invoiceno` = its RECORDID) reduces what that invoice has due.
    pub fn create_aradjustment(&mut self, body: &Element, location: &str) -> Result<u64, FnError> {
        let fail = |msg: &str| could_not("Adjustment", msg);
        let customer_id = body.text_at("customerid").unwrap_or_default();
        let customer = self.customer(customer_id).map_err(|m| fail(&m))?;
        let created = legacy_date(body, "datecreated")
            .map_err(|m| fail(&m))?
            .ok_or_else(|| fail("Required field datecreated is missing"))?;
        let posted = legacy_date(body, "dateposted").map_err(|m| fail(&m))?;
        let money = self
            .legacy_money(body, location, created)
            .map_err(|m| fail(&m))?;
        let lines: Vec<&Element> = body
            .child("aradjustmentitems")
            .map(|i| i.children_named("lineitem").collect())
            .unwrap_or_default();
        let lines =
            gl_lines(&lines, "An adjustment needs at least one line item").map_err(|m| fail(&m))?;
        let total: Decimal = lines.iter().map(|l| l.amount).sum();
        let adjustment_no = body.text_at("adjustmentno").unwrap_or_default();
        if !adjustment_no.is_empty() && self.by_key(spec("ARADJUSTMENT")?, adjustment_no).is_some()
        {
            return Err(duplicate("Adjustment", adjustment_no, "Adjustment"));
        }
        let invoice_no = body.text_at("invoiceno").unwrap_or_default();
        if !invoice_no.is_empty()
            && let Some(inv) = self.by_key(spec("ARINVOICE")?, invoice_no)
        {
            let owner = self
                .get("ARINVOICE", inv)
                .and_then(|r| field(r, "CUSTOMERID"))
                .unwrap_or_default();
            if owner != customer_id {
                return Err(fail(&format!(
                    "Invoice {invoice_no} belongs to customer {owner}, not to {customer_id}"
                )));
            }
            if total < Decimal::ZERO {
                self.apply_to_invoices(
                    customer_id,
                    &money.currency,
                    &[(inv, -total)],
                    posted.unwrap_or(created),
                    "Credit",
                )
                .map_err(|m| fail(&m))?;
            }
        }
        let items = gl_items("ARADJUSTMENTITEMS", "aradjustmentitem", &lines, &money);
        let no = self.alloc_recordno();
        let text = |name: &str| body.text_at(name).unwrap_or_default().to_owned();
        let mut rec = Element::new("ARADJUSTMENT")
            .with_leaf(
                "RECORDID",
                if adjustment_no.is_empty() {
                    no.to_string()
                } else {
                    adjustment_no.to_owned()
                },
            )
            .with_leaf("RECORDTYPE", "ra")
            .with_leaf(
                "ADJUSTMENTTYPE",
                if total < Decimal::ZERO {
                    "Credit Memo"
                } else {
                    "Debit Memo"
                },
            )
            .with_leaf("CUSTOMERID", customer_id)
            .with_leaf("CUSTOMERNAME", field(&customer, "NAME").unwrap_or_default())
            .with_leaf("DOCNUMBER", invoice_no)
            .with_leaf("DESCRIPTION", text("description"))
            .with_leaf("STATE", "Posted")
            .with_leaf("WHENCREATED", created.format("%m/%d/%Y").to_string())
            .with_leaf(
                "WHENPOSTED",
                posted.unwrap_or(created).format("%m/%d/%Y").to_string(),
            )
            .with_leaf("PRBATCHKEY", text("batchkey"))
            .with_leaf("EXTERNALID", text("externalid"));
        money.stamp(&mut rec);
        set_totals(&mut rec, money.rate, total, Decimal::ZERO);
        rec = rec.with(items);
        self.insert_at("ARADJUSTMENT", no, rec, location);
        Ok(no)
    }

    /// Legacy `create_bill`: an APBILL with its lines; returns the RECORDNO (`<key>`).
    pub fn create_bill(&mut self, body: &Element, location: &str) -> Result<u64, FnError> {
        let fail = |msg: &str| could_not("Bill", msg);
        let vendor_id = body.text_at("vendorid").unwrap_or_default();
        let vendor = self
            .by_key(spec("VENDOR")?, vendor_id)
            .and_then(|no| self.get("VENDOR", no))
            .cloned()
            .ok_or_else(|| fail(&format!("Invalid Vendor {vendor_id} specified.")))?;
        let created = legacy_date(body, "datecreated")
            .map_err(|m| fail(&m))?
            .ok_or_else(|| fail("Required field datecreated is missing"))?;
        let due = legacy_date(body, "datedue").map_err(|m| fail(&m))?;
        let money = self
            .legacy_money(body, location, created)
            .map_err(|m| fail(&m))?;
        let lines: Vec<&Element> = body
            .child("billitems")
            .map(|i| i.children_named("lineitem").collect())
            .unwrap_or_default();
        let lines =
            gl_lines(&lines, "A bill needs at least one line item").map_err(|m| fail(&m))?;
        let bill_no = body.text_at("billno").unwrap_or_default();
        if !bill_no.is_empty() && self.by_key(spec("APBILL")?, bill_no).is_some() {
            return Err(duplicate("Bill", bill_no, "Bill"));
        }
        let items = gl_items("APBILLITEMS", "apbillitem", &lines, &money);
        let total: Decimal = lines.iter().map(|l| l.amount).sum();
        let no = self.alloc_recordno();
        let text = |name: &str| body.text_at(name).unwrap_or_default().to_owned();
        let mut rec = Element::new("APBILL")
            .with_leaf(
                "RECORDID",
                if bill_no.is_empty() {
                    no.to_string()
                } else {
                    bill_no.to_owned()
                },
            )
            .with_leaf("RECORDTYPE", "pi")
            .with_leaf("VENDORID", vendor_id)
            .with_leaf("VENDORNAME", field(&vendor, "NAME").unwrap_or_default())
            .with_leaf("STATE", "Posted")
            .with_leaf("DOCNUMBER", text("ponumber"))
            .with_leaf("DESCRIPTION", text("description"))
            .with_leaf("TERMNAME", text("termname"))
            .with_leaf("WHENCREATED", created.format("%m/%d/%Y").to_string())
            .with_leaf(
                "WHENDUE",
                due.map(|d| d.format("%m/%d/%Y").to_string())
                    .unwrap_or_default(),
            );
        money.stamp(&mut rec);
        set_totals(&mut rec, money.rate, total, Decimal::ZERO);
        rec = rec.with_leaf("MODULEKEY", "3.AP").with(items);
        self.insert_at("APBILL", no, rec, location);
        Ok(no)
    }

    /// A generic `create` APBILL: the vendor must exist; `APBILLITEMS/APBILLITEM{ACCOUNTNO,
    /// TRX_AMOUNT}` give the totals.
    fn prepare_bill(&self, rec: &Element, location: &str) -> Result<Element, String> {
        let vendor_id = field(rec, "VENDORID").unwrap_or_default();
        let vendor = self
            .by_key(spec("VENDOR").map_err(|_| "no VENDOR")?, vendor_id)
            .and_then(|no| self.get("VENDOR", no))
            .ok_or_else(|| format!("Invalid Vendor {vendor_id} specified."))?;
        let created = field(rec, "WHENCREATED")
            .and_then(|d| NaiveDate::parse_from_str(d, "%m/%d/%Y").ok())
            .unwrap_or_else(|| Utc::now().date_naive());
        let nonempty = |f: &str| field(rec, f).filter(|v| !v.is_empty());
        let money = self.money(
            location,
            nonempty("BASECURR"),
            nonempty("CURRENCY"),
            nonempty("EXCH_RATE_TYPE_ID"),
            nonempty("EXCHANGE_RATE"),
            created,
        )?;
        let mut total = Decimal::ZERO;
        let mut n = 0;
        for (i, item) in rec
            .child("APBILLITEMS")
            .into_iter()
            .flat_map(|c| c.children_named("APBILLITEM"))
            .enumerate()
        {
            n += 1;
            if field(item, "ACCOUNTNO").is_none_or(str::is_empty) {
                return Err(format!("Line {}: ACCOUNTNO is required", i + 1));
            }
            let a = field(item, "TRX_AMOUNT").unwrap_or_default();
            total += a
                .trim()
                .parse::<Decimal>()
                .map_err(|_| format!("Line {}: invalid TRX_AMOUNT {a}", i + 1))?;
        }
        if n == 0 {
            return Err("A bill needs at least one line item".into());
        }
        let mut out = rec.clone();
        out.set_leaf("VENDORNAME", field(vendor, "NAME").unwrap_or_default());
        out.set_leaf("RECORDTYPE", "pi");
        if field(&out, "STATE").is_none() {
            out.set_leaf("STATE", "Posted");
        }
        money.stamp(&mut out);
        set_totals(&mut out, money.rate, total, Decimal::ZERO);
        Ok(out)
    }

    // ---- currencies ----

    /// The base currency of an entity (`""`: top level).
    pub fn base_currency_of(&self, location: &str) -> String {
        self.entity_currency
            .get(location)
            .cloned()
            .unwrap_or_else(|| self.base_currency.clone())
    }

    pub fn set_base_currencies(&mut self, top_level: &str, entities: &[(String, String)]) {
        self.base_currency = top_level.to_owned();
        self.entity_currency = entities.iter().cloned().collect();
    }

    /// Sets the "Intacct Daily Rate" from → to.
    pub fn set_rate(&mut self, from: &str, to: &str, rate: Decimal) {
        self.rates.insert((from.to_owned(), to.to_owned()), rate);
    }

    /// The daily rate: direct, inverse, or across USD.
    fn daily_rate(&self, from: &str, to: &str) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        let direct = |f: &str, t: &str| -> Option<Decimal> {
            if f == t {
                return Some(Decimal::ONE);
            }
            if let Some(r) = self.rates.get(&(f.to_owned(), t.to_owned())) {
                return Some(*r);
            }
            let inv = self.rates.get(&(t.to_owned(), f.to_owned()))?;
            (!inv.is_zero()).then(|| (Decimal::ONE / inv).round_dp(10))
        };
        direct(from, to).or_else(|| {
            let via = (direct(from, "USD")? * direct("USD", to)?).round_dp(10);
            Some(via)
        })
    }

    /// The currency context of a transaction created in `location`.
    fn money(
        &self,
        location: &str,
        basecurr: Option<&str>,
        currency: Option<&str>,
        rate_type: Option<&str>,
        rate: Option<&str>,
        date: NaiveDate,
    ) -> Result<Money, String> {
        let base = self.base_currency_of(location);
        if let Some(b) = basecurr
            && b != base
        {
            return Err(format!(
                "Base currency {b} does not match the base currency {base} of this entity"
            ));
        }
        let currency = currency.unwrap_or(&base).to_owned();
        if self
            .by_key(spec("CURRENCY").map_err(|_| "no CURRENCY")?, &currency)
            .is_none()
        {
            return Err(format!("Invalid currency {currency}"));
        }
        let (rate, rate_type) = if let Some(r) = rate {
            let r = r
                .trim()
                .parse::<Decimal>()
                .ok()
                .filter(|r| *r > Decimal::ZERO)
                .ok_or_else(|| format!("Invalid exchange rate {r}"))?;
            (r, String::new())
        } else if currency == base {
            (Decimal::ONE, rate_type.unwrap_or_default().to_owned())
        } else {
            let t = rate_type.unwrap_or(DAILY_RATE);
            if t != DAILY_RATE {
                return Err(format!("Invalid exchange rate type {t}"));
            }
            let r = self.daily_rate(&currency, &base).ok_or_else(|| {
                format!(
                    "No exchange rate from {currency} to {base} on {}",
                    date.format("%m/%d/%Y")
                )
            })?;
            (r, t.to_owned())
        };
        Ok(Money {
            currency,
            basecurr: base,
            rate,
            rate_type,
            rate_date: date,
        })
    }

    /// `basecurr, currency, exchratedate, exchratetype | exchrate` of a legacy function.
    fn legacy_money(
        &self,
        body: &Element,
        location: &str,
        default_date: NaiveDate,
    ) -> Result<Money, String> {
        let date = legacy_date(body, "exchratedate")?.unwrap_or(default_date);
        let nonempty = |f: &str| body.text_at(f).filter(|v| !v.is_empty());
        self.money(
            location,
            nonempty("basecurr"),
            nonempty("currency"),
            nonempty("exchratetype"),
            nonempty("exchrate"),
            date,
        )
    }
}

/// Transaction definitions `create_sotransaction` knows, with their numbering prefix.
pub const SALES_DEFINITIONS: &[(&str, &str)] = &[
    ("Sales Order", "SO-"),
    ("Sales Invoice", "INV-"),
    ("Sales Quote", "QT-"),
];

/// The GL account a Sales Invoice line posts to when its ITEM has no INCOMEGLACCOUNT.
pub const DEFAULT_SALES_ACCOUNT: &str = "4000";

/// Intacct's default exchange rate type.
pub const DAILY_RATE: &str = "Intacct Daily Rate";

/// The simulator's fixed "Intacct Daily Rate" table: (from, to, rate).
pub fn default_exchange_rates() -> Vec<(String, String, Decimal)> {
    [
        ("EUR", "USD", "1.08"),
        ("GBP", "USD", "1.27"),
        ("EUR", "GBP", "0.85"),
        ("CAD", "USD", "0.73"),
    ]
    .into_iter()
    .map(|(f, t, r)| (f.to_owned(), t.to_owned(), r.parse().expect("rate")))
    .collect()
}

/// Rounds to cents, half away from zero (commercial rounding), always with 2 decimals.
pub fn cents(d: Decimal) -> Decimal {
    let mut r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r
}

/// The currency context of one transaction.
#[derive(Clone, Debug)]
struct Money {
    currency: String,
    basecurr: String,
    /// Transaction → base.
    rate: Decimal,
    rate_type: String,
    rate_date: NaiveDate,
}

impl Money {
    fn to_base(&self, trx: Decimal) -> Decimal {
        cents(trx * self.rate)
    }

    fn stamp(&self, rec: &mut Element) {
        rec.set_leaf("CURRENCY", &self.currency);
        rec.set_leaf("BASECURR", &self.basecurr);
        rec.set_leaf(
            "EXCH_RATE_DATE",
            self.rate_date.format("%m/%d/%Y").to_string(),
        );
        rec.set_leaf("EXCH_RATE_TYPE_ID", &self.rate_type);
        rec.set_leaf("EXCHANGE_RATE", self.rate.normalize().to_string());
    }
}

/// Sets `TRX_TOTALENTERED / TRX_TOTALPAID / TRX_TOTALDUE` (transaction currency) and
/// `TOTALENTERED / TOTALPAID / TOTALDUE` (base currency). Base entered and base paid are the
/// transaction amounts times the document's rate, each rounded to cents half away from zero
/// ([`cents`]); base due is base entered − base paid, so a document paid in full owes exactly
/// 0 in both currencies (no rounding residue).
fn set_totals(rec: &mut Element, rate: Decimal, trx_entered: Decimal, trx_paid: Decimal) {
    let entered = cents(trx_entered * rate);
    let paid = if trx_paid == trx_entered {
        entered
    } else {
        cents(trx_paid * rate)
    };
    rec.set_leaf("TRX_TOTALENTERED", cents(trx_entered).to_string());
    rec.set_leaf("TRX_TOTALPAID", cents(trx_paid).to_string());
    rec.set_leaf("TRX_TOTALDUE", cents(trx_entered - trx_paid).to_string());
    rec.set_leaf("TOTALENTERED", entered.to_string());
    rec.set_leaf("TOTALPAID", paid.to_string());
    rec.set_leaf("TOTALDUE", (entered - paid).to_string());
}

/// (entered, paid, rate) of an invoice in its transaction currency; records seeded without
/// TRX_ amounts fall back to the base ones at rate 1.
fn invoice_amounts(inv: &Element) -> (Decimal, Decimal, Decimal) {
    let dec = |f: &str| -> Option<Decimal> { field(inv, f).and_then(|v| v.trim().parse().ok()) };
    let paid = dec("TRX_TOTALPAID")
        .or_else(|| dec("TOTALPAID"))
        .unwrap_or_default();
    let entered = dec("TRX_TOTALENTERED")
        .or_else(|| dec("TOTALENTERED"))
        .unwrap_or_else(|| dec("TOTALDUE").unwrap_or_default() + paid);
    let rate = dec("EXCHANGE_RATE")
        .filter(|r| *r > Decimal::ZERO)
        .unwrap_or(Decimal::ONE);
    (entered, paid, rate)
}

/// What an invoice header needs.
struct InvoiceHeader<'a> {
    customer_id: &'a str,
    customer_name: &'a str,
    record_id: &'a str,
    created: NaiveDate,
    due: Option<NaiveDate>,
    term_name: &'a str,
    description: &'a str,
    module_key: &'a str,
}

/// A `lineitem` of a legacy invoice / adjustment / bill.
struct GlLine {
    account: String,
    amount: Decimal,
    memo: String,
    location: String,
    department: String,
}

/// The line elements of an adjustment or a bill: transaction and base amounts per GL line.
fn gl_items(container: &str, item: &str, lines: &[GlLine], money: &Money) -> Element {
    let mut items = Element::new(container);
    for (i, l) in lines.iter().enumerate() {
        items = items.with(
            Element::new(item)
                .with_leaf("LINE_NO", i.to_string())
                .with_leaf("ACCOUNTNO", &l.account)
                .with_leaf("TRX_AMOUNT", cents(l.amount).to_string())
                .with_leaf("AMOUNT", money.to_base(l.amount).to_string())
                .with_leaf("ENTRYDESCRIPTION", &l.memo)
                .with_leaf("LOCATIONID", &l.location)
                .with_leaf("DEPARTMENTID", &l.department),
        );
    }
    items
}

fn gl_lines(lines: &[&Element], none: &str) -> Result<Vec<GlLine>, String> {
    if lines.is_empty() {
        return Err(none.to_owned());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let account = l.text_at("glaccountno").unwrap_or_default();
            if account.is_empty() {
                return Err(format!("Line {}: glaccountno is required", i + 1));
            }
            let amount: Decimal = l
                .text_at("amount")
                .and_then(|a| a.trim().parse().ok())
                .ok_or_else(|| format!("Line {}: invalid amount", i + 1))?;
            let text = |name: &str| l.text_at(name).unwrap_or_default().to_owned();
            Ok(GlLine {
                account: account.to_owned(),
                amount,
                memo: text("memo"),
                location: text("locationid"),
                department: text("departmentid"),
            })
        })
        .collect()
}

/// `<name><year/><month/><day/></name>` of a legacy function.
fn legacy_date(body: &Element, name: &str) -> Result<Option<NaiveDate>, String> {
    let Some(d) = body.child(name) else {
        return Ok(None);
    };
    let part = |p: &str| d.text_at(p).and_then(|v| v.trim().parse::<u32>().ok());
    match (part("year"), part("month"), part("day")) {
        (Some(y), Some(m), Some(dd)) => i32::try_from(y)
            .ok()
            .and_then(|y| NaiveDate::from_ymd_opt(y, m, dd))
            .map(Some)
            .ok_or_else(|| format!("Invalid {name}")),
        _ => Err(format!("Invalid {name}")),
    }
}

/// A business-rule failure of a legacy create: the rule's message, then "Could not create
/// {label} record!" (both `BL01001973`, the shape of the SDK's ClassObjTest fixture).
fn could_not(label: &str, msg: &str) -> FnError {
    FnError(vec![
        ErrorDetail::new("BL01001973", "", msg, ""),
        ErrorDetail::new(
            "BL01001973",
            "",
            &format!("Could not create {label} record!"),
            "",
        ),
    ])
}

/// `BL34000061` "Another {what} with the given value(s) {value}  already exists" (two spaces,
/// as in the fixture) + "Could not create {label} record!".
fn duplicate(what: &str, value: &str, label: &str) -> FnError {
    FnError(vec![
        ErrorDetail::new(
            "BL34000061",
            "",
            &format!("Another {what} with the given value(s) {value}  already exists"),
            "Use a unique value instead.",
        ),
        ErrorDetail::new(
            "BL01001973",
            "",
            &format!("Could not create {label} record!"),
            "",
        ),
    ])
}

/// A comparison operator of the query subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `FIELD op value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub field: String,
    pub op: Op,
    pub value: String,
}

/// Intacct's `MM/DD/YYYY` or `MM/DD/YYYY HH:MM:SS`.
fn parse_intacct_datetime(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(s, "%m/%d/%Y %H:%M:%S")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%m/%d/%Y")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

/// Compares as numbers when both are decimals, as datetimes when both are Intacct dates,
/// else as text.
fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    if let (Ok(x), Ok(y)) = (a.parse::<Decimal>(), b.parse::<Decimal>()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (parse_intacct_datetime(a), parse_intacct_datetime(b)) {
        return x.cmp(&y);
    }
    a.cmp(b)
}

impl Cond {
    fn matches(&self, r: &Element) -> bool {
        let Some(v) = field(r, &self.field) else {
            return false;
        };
        let o = compare(v, &self.value);
        match self.op {
            Op::Eq => o.is_eq(),
            Op::Ne => o.is_ne(),
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Gt => o.is_gt(),
            Op::Ge => o.is_ge(),
        }
    }
}

fn collect_filter(op: &Element, out: &mut Vec<Cond>) -> Result<(), FnError> {
    if op.is("and") {
        for c in &op.children {
            collect_filter(c, out)?;
        }
        return Ok(());
    }
    let kind = [
        ("equalto", Op::Eq),
        ("notequalto", Op::Ne),
        ("lessthan", Op::Lt),
        ("lessthanorequalto", Op::Le),
        ("greaterthan", Op::Gt),
        ("greaterthanorequalto", Op::Ge),
    ]
    .into_iter()
    .find(|(name, _)| op.is(name));
    let Some((_, kind)) = kind else {
        return Err(FnError::one(
            "Query Failed",
            &format!(
                "The simulator supports comparison filters under and, not {}",
                op.name
            ),
        ));
    };
    out.push(Cond {
        field: op.text_at("field").unwrap_or_default().to_owned(),
        op: kind,
        value: op.text_at("value").unwrap_or_default().to_owned(),
    });
    Ok(())
}

/// `FIELD op value` conditions (`= != <> < <= > >=`, values quoted or bare) joined by
/// `AND`; an empty query matches everything.
fn parse_query(q: &str) -> Result<Vec<Cond>, FnError> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(Vec::new());
    }
    let unsupported = || FnError::one("Query Failed", &format!("Unsupported query: {q}"));
    let mut out = Vec::new();
    let mut rest = q;
    loop {
        let (cond, tail) = split_and(rest);
        let idx = cond.find(['<', '>', '=', '!']).ok_or_else(unsupported)?;
        let f = cond[..idx].trim();
        let after = &cond[idx..];
        let (op, v) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("!=", Op::Ne),
            ("<>", Op::Ne),
            ("=", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find_map(|(tok, op)| after.strip_prefix(tok).map(|v| (op, v)))
        .ok_or_else(unsupported)?;
        let v = v.trim();
        let v = if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            inner.replace("\\'", "'")
        } else {
            v.to_owned()
        };
        if f.is_empty() || f.contains(' ') {
            return Err(unsupported());
        }
        out.push(Cond {
            field: f.to_owned(),
            op,
            value: v,
        });
        match tail {
            Some(t) => rest = t,
            None => return Ok(out),
        }
    }
}

/// Splits at the first ` AND ` outside quotes.
fn split_and(s: &str) -> (&str, Option<&str>) {
    let bytes = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'\'' => quoted = !quoted,
            b' ' if !quoted
                && s.get(i..i + 5)
                    .is_some_and(|w| w.eq_ignore_ascii_case(" and ")) =>
            {
                return (&s[..i], Some(&s[i + 5..]));
            }
            _ => {}
        }
        i += 1;
    }
    (s, None)
}

fn project(r: &Element, fields: &str, lowercase: bool) -> Element {
    let mut out = if fields.trim() == "*" || fields.trim().is_empty() {
        r.clone()
    } else {
        let mut e = Element::new(&r.name);
        for f in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match r.child(f) {
                Some(c) => e.children.push(c.clone()),
                None => e.children.push(Element::new(f.to_ascii_uppercase())),
            }
        }
        e
    };
    if lowercase {
        out.name = out.name.to_ascii_lowercase();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_query(q: &str, expected: &[(&str, Op, &str)]) {
        let got = parse_query(q).unwrap();
        let expected: Vec<Cond> = expected
            .iter()
            .map(|(f, op, v)| Cond {
                field: (*f).to_owned(),
                op: *op,
                value: (*v).to_owned(),
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn query_subset() {
        check_query("", &[]);
        check_query("CUSTOMERID = 'C1'", &[("CUSTOMERID", Op::Eq, "C1")]);
        check_query(
            "NAME = 'Ben and Jerry\\'s' AND STATUS = 'active'",
            &[
                ("NAME", Op::Eq, "Ben and Jerry's"),
                ("STATUS", Op::Eq, "active"),
            ],
        );
        check_query("RECORDNO < 2", &[("RECORDNO", Op::Lt, "2")]);
        check_query(
            "WHENMODIFIED >= '01/02/2024 10:00:00' and RECORDNO<>7",
            &[
                ("WHENMODIFIED", Op::Ge, "01/02/2024 10:00:00"),
                ("RECORDNO", Op::Ne, "7"),
            ],
        );
        assert!(parse_query("NAME like 'A%'").is_err());
        assert!(parse_query("A B = 1").is_err());
    }

    #[test]
    fn comparisons_by_type() {
        use std::cmp::Ordering::*;
        assert_eq!(compare("10", "9"), Greater);
        assert_eq!(compare("02/01/2024", "12/31/2023 23:59:59"), Greater);
        assert_eq!(compare("01/02/2024 10:00:00", "01/02/2024 10:00:00"), Equal);
        assert_eq!(compare("b", "a"), Greater);
    }
}
