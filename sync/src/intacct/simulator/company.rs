//! The simulated company: records per object, the write rules and the query subset.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;

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
    #[allow(dead_code)]
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
    #[allow(dead_code)]
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
                if spec.name == "ARPYMT" {
                    self.apply_payment(rec)?;
                }
                self.insert_raw(spec.name, rec.clone(), location)
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

    /// Applies `ARPYMTDETAILS/ARPYMTDETAIL{RECORDKEY, TRX_PAYMENTAMOUNT}` to invoices.
    fn apply_payment(&mut self, rec: &Element) -> Result<(), FnError> {
        let Some(details) = rec.child("ARPYMTDETAILS") else {
            return Ok(());
        };
        for d in details.children_named("ARPYMTDETAIL") {
            let key: u64 = field(d, "RECORDKEY")
                .and_then(|k| k.parse().ok())
                .ok_or_else(|| FnError::one("BL01001973", "ARPYMTDETAIL needs a RECORDKEY"))?;
            let amount: Decimal = field(d, "TRX_PAYMENTAMOUNT")
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| FnError::one("BL01001973", "Invalid TRX_PAYMENTAMOUNT"))?;
            let inv = self.get("ARINVOICE", key).ok_or_else(|| {
                FnError::one("BL01001973", &format!("Invalid invoice RECORDKEY {key}"))
            })?;
            let dec = |f: &str| -> Decimal {
                field(inv, f)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default()
            };
            let due = dec("TOTALDUE");
            if amount > due || amount <= Decimal::ZERO {
                return Err(FnError::one(
                    "BL01001973",
                    &format!("Payment amount {amount} exceeds the amount due {due}"),
                ));
            }
            let paid = dec("TOTALPAID") + amount;
            self.modify("ARINVOICE", key, |inv| {
                inv.set_leaf("TOTALDUE", (due - amount).to_string());
                inv.set_leaf("TOTALPAID", paid.to_string());
                inv.set_leaf(
                    "STATE",
                    if due == amount {
                        "Paid"
                    } else {
                        "Partially Paid"
                    },
                );
            });
        }
        Ok(())
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
        let fail = |msg: &str| {
            FnError(vec![
                ErrorDetail::new("BL01001973", "", msg, ""),
                ErrorDetail::new("BL01001973", "", "Could not create Invoice record!", ""),
            ])
        };
        let customer_id = body.text_at("customerid").unwrap_or_default();
        let customer = self
            .by_key(spec("CUSTOMER")?, customer_id)
            .map(|no| self.records["CUSTOMER"][&no].clone())
            .ok_or_else(|| fail(&format!("Invalid Customer {customer_id} specified.")))?;
        let date = |name: &str| -> Result<Option<NaiveDate>, FnError> {
            let Some(d) = body.child(name) else {
                return Ok(None);
            };
            let part = |p: &str| d.text_at(p).and_then(|v| v.parse::<u32>().ok());
            let ymd = (part("year"), part("month"), part("day"));
            match ymd {
                (Some(y), Some(m), Some(dd)) => i32::try_from(y)
                    .ok()
                    .and_then(|y| NaiveDate::from_ymd_opt(y, m, dd))
                    .map(Some)
                    .ok_or_else(|| fail(&format!("Invalid {name}"))),
                _ => Err(fail(&format!("Invalid {name}"))),
            }
        };
        let created =
            date("datecreated")?.ok_or_else(|| fail("Required field datecreated is missing"))?;
        let due = date("datedue")?;
        let currency = body.text_at("currency").unwrap_or("USD").to_owned();
        if self.by_key(spec("CURRENCY")?, &currency).is_none() {
            return Err(fail(&format!("Invalid currency {currency}")));
        }
        let mut total = Decimal::ZERO;
        let mut items = Element::new("ARINVOICEITEMS");
        let lines: Vec<&Element> = body
            .child("invoiceitems")
            .map(|i| i.children_named("lineitem").collect())
            .unwrap_or_default();
        if lines.is_empty() {
            return Err(fail("An invoice needs at least one line item"));
        }
        for (i, l) in lines.iter().enumerate() {
            let account = l.text_at("glaccountno").unwrap_or_default();
            if account.is_empty() {
                return Err(fail(&format!("Line {}: glaccountno is required", i + 1)));
            }
            let amount: Decimal = l
                .text_at("amount")
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| fail(&format!("Line {}: invalid amount", i + 1)))?;
            total += amount;
            items = items.with(
                Element::new("arinvoiceitem")
                    .with_leaf("LINE_NO", i.to_string())
                    .with_leaf("ACCOUNTNO", account)
                    .with_leaf("AMOUNT", amount.to_string())
                    .with_leaf("ENTRYDESCRIPTION", l.text_at("memo").unwrap_or_default())
                    .with_leaf("LOCATIONID", l.text_at("locationid").unwrap_or_default())
                    .with_leaf(
                        "DEPARTMENTID",
                        l.text_at("departmentid").unwrap_or_default(),
                    ),
            );
        }
        let invoice_no = body.text_at("invoiceno").unwrap_or_default();
        if !invoice_no.is_empty() && self.by_key(spec("ARINVOICE")?, invoice_no).is_some() {
            return Err(FnError(vec![
                ErrorDetail::new(
                    "BL34000061",
                    "",
                    &format!(
                        "Another Invoice with the given value(s) {invoice_no}  already exists"
                    ),
                    "Use a unique value instead.",
                ),
                ErrorDetail::new("BL01001973", "", "Could not create Invoice record!", ""),
            ]));
        }
        let rec = Element::new("ARINVOICE")
            .with_leaf("RECORDID", invoice_no)
            .with_leaf("RECORDTYPE", "ri")
            .with_leaf("CUSTOMERID", customer_id)
            .with_leaf("CUSTOMERNAME", field(&customer, "NAME").unwrap_or_default())
            .with_leaf("STATE", "Posted")
            .with_leaf(
                "DESCRIPTION",
                body.text_at("description").unwrap_or_default(),
            )
            .with_leaf("TERMNAME", body.text_at("termname").unwrap_or_default())
            .with_leaf("WHENCREATED", created.format("%m/%d/%Y").to_string())
            .with_leaf(
                "WHENDUE",
                due.map(|d| d.format("%m/%d/%Y").to_string())
                    .unwrap_or_default(),
            )
            .with_leaf("TOTALENTERED", total.to_string())
            .with_leaf("TOTALDUE", total.to_string())
            .with_leaf("TOTALPAID", "0")
            .with_leaf("CURRENCY", &currency)
            .with_leaf(
                "EXCH_RATE_TYPE_ID",
                body.text_at("exchratetype").unwrap_or_default(),
            )
            .with_leaf("MODULEKEY", "4.AR")
            .with(items);
        let no = self.alloc_recordno();
        let mut rec = rec;
        if invoice_no.is_empty() {
            rec.set_leaf("RECORDID", no.to_string());
        }
        self.insert_at("ARINVOICE", no, rec, location);
        Ok(no)
    }
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
