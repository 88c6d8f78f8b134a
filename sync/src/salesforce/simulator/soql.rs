//! The SOQL subset the client issues, parsed and run against the simulated org:
//! `SELECT f, … | COUNT() FROM Obj [WHERE c [AND|OR c]…] [ORDER BY f [ASC|DESC]
//! [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]`, conditions `= != <> < <= > >=` on strings,
//! numbers, booleans, `null`, dates and unquoted datetimes, `[NOT] IN (…)`, `LIKE`, `NOT`,
//! parentheses. As in Salesforce, AND and OR cannot be mixed without parentheses.
//!
//! Errors use Salesforce's codes and message shape: `MALFORMED_QUERY` for syntax,
//! `INVALID_FIELD` (`No such column 'X' on entity 'Y'…`, with the query, a caret and
//! `ERROR at Row:1:Column:N`) for unknown fields and ill-typed values, `INVALID_TYPE` for an
//! unknown object.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::schema::{FieldType, ObjectDef, Schema};
use crate::salesforce::soql::{parse_date, parse_datetime};
use crate::salesforce::wire::{ApiError, Value};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(&'static str),
    Comma,
    LParen,
    RParen,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    col: usize,
}

#[derive(Clone, Debug)]
pub enum Lit {
    Null,
    Bool(bool),
    Num(Decimal),
    Str(String),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
}

#[derive(Clone, Debug)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Cmp {
        field: String,
        op: &'static str,
        lit: Lit,
    },
    In {
        field: String,
        negated: bool,
        list: Vec<Lit>,
    },
    Like {
        field: String,
        pattern: String,
    },
}

#[derive(Clone, Debug)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
    pub nulls_first: bool,
    /// Ids sort by their bytes; other text case-insensitively.
    pub exact: bool,
}

/// A parsed and checked query; field names are the schema's spelling.
#[derive(Clone, Debug)]
pub struct Query {
    pub object: String,
    pub fields: Vec<String>,
    pub count: bool,
    pub filter: Option<Cond>,
    pub order: Vec<OrderBy>,
    pub limit: Option<usize>,
    pub offset: usize,
}

struct Parser<'a> {
    soql: &'a str,
    toks: Vec<Token>,
    pos: usize,
}

fn error_at(soql: &str, col: usize, code: &str, message: &str) -> ApiError {
    let caret = format!("{}^", " ".repeat(col.saturating_sub(1)));
    ApiError::new(
        code,
        format!("\n{soql}\n{caret}\nERROR at Row:1:Column:{col}\n{message}"),
    )
}

fn tokenize(soql: &str) -> Result<Vec<Token>, ApiError> {
    let chars: Vec<char> = soql.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | ':' | '-' | '+'))
            {
                i += 1;
            }
            Tok::Num(chars[start..i].iter().collect())
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(error_at(
                            soql,
                            col,
                            "MALFORMED_QUERY",
                            "unterminated string literal",
                        ));
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = chars.get(i + 1).copied().unwrap_or('\\');
                        s.push(match e {
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            'b' => '\u{8}',
                            'f' => '\u{c}',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            Tok::Str(s)
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let (op, len) = match (c, two.as_str()) {
                (_, "!=") => (Tok::Op("!="), 2),
                (_, "<>") => (Tok::Op("!="), 2),
                (_, "<=") => (Tok::Op("<="), 2),
                (_, ">=") => (Tok::Op(">="), 2),
                ('=', _) => (Tok::Op("="), 1),
                ('<', _) => (Tok::Op("<"), 1),
                ('>', _) => (Tok::Op(">"), 1),
                (',', _) => (Tok::Comma, 1),
                ('(', _) => (Tok::LParen, 1),
                (')', _) => (Tok::RParen, 1),
                _ => {
                    return Err(error_at(
                        soql,
                        col,
                        "MALFORMED_QUERY",
                        &format!("unexpected token: '{c}'"),
                    ));
                }
            };
            i += len;
            op
        };
        toks.push(Token { tok, col });
    }
    Ok(toks)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn col(&self) -> usize {
        self.peek()
            .map(|t| t.col)
            .unwrap_or(self.soql.chars().count() + 1)
    }

    fn malformed(&self, message: &str) -> ApiError {
        error_at(self.soql, self.col(), "MALFORMED_QUERY", message)
    }

    fn unexpected(&self) -> ApiError {
        match self.peek() {
            None => self.malformed("unexpected token: <EOF>"),
            Some(t) => {
                let shown = match &t.tok {
                    Tok::Ident(s) | Tok::Num(s) => s.clone(),
                    Tok::Str(s) => format!("'{s}'"),
                    Tok::Op(o) => (*o).to_owned(),
                    Tok::Comma => ",".into(),
                    Tok::LParen => "(".into(),
                    Tok::RParen => ")".into(),
                };
                self.malformed(&format!("unexpected token: '{shown}'"))
            }
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if let Some(Token {
            tok: Tok::Ident(s), ..
        }) = self.peek()
            && s.eq_ignore_ascii_case(kw)
        {
            self.pos += 1;
            return true;
        }
        false
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), ApiError> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn is(&self, t: &Tok) -> bool {
        self.peek().is_some_and(|x| &x.tok == t)
    }

    fn ident(&mut self) -> Result<(String, usize), ApiError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Ident(s),
                col,
            }) if !is_reserved(s) => {
                let out = (s.clone(), *col);
                self.pos += 1;
                Ok(out)
            }
            _ => Err(self.unexpected()),
        }
    }
}

fn is_reserved(s: &str) -> bool {
    [
        "select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "limit",
        "offset", "asc", "desc", "nulls", "null", "true", "false",
    ]
    .iter()
    .any(|k| s.eq_ignore_ascii_case(k))
}

/// Raw condition with positions, checked against the schema afterwards.
enum RawCond {
    And(Vec<RawCond>),
    Or(Vec<RawCond>),
    Not(Box<RawCond>),
    Cmp {
        field: (String, usize),
        op: &'static str,
        lit: (Tok, usize),
    },
    In {
        field: (String, usize),
        negated: bool,
        list: Vec<(Tok, usize)>,
    },
    Like {
        field: (String, usize),
        pattern: (Tok, usize),
    },
}

impl Parser<'_> {
    fn condition_list(&mut self) -> Result<RawCond, ApiError> {
        let first = self.factor()?;
        let mut items = vec![first];
        let mut connective: Option<&str> = None;
        loop {
            let this = if self.keyword("AND") {
                "AND"
            } else if self.keyword("OR") {
                "OR"
            } else {
                break;
            };
            if connective.is_some_and(|c| c != this) {
                self.pos -= 1;
                return Err(self.unexpected());
            }
            connective = Some(this);
            items.push(self.factor()?);
        }
        Ok(match connective {
            None => items.pop().unwrap_or(RawCond::And(Vec::new())),
            Some("AND") => RawCond::And(items),
            Some(_) => RawCond::Or(items),
        })
    }

    fn literal(&mut self) -> Result<(Tok, usize), ApiError> {
        match self.peek() {
            Some(
                t @ Token {
                    tok: Tok::Str(_) | Tok::Num(_),
                    ..
                },
            ) => {
                let out = (t.tok.clone(), t.col);
                self.pos += 1;
                Ok(out)
            }
            Some(
                t @ Token {
                    tok: Tok::Ident(s), ..
                },
            ) if ["null", "true", "false"]
                .iter()
                .any(|k| s.eq_ignore_ascii_case(k)) =>
            {
                let out = (Tok::Ident(s.to_ascii_lowercase()), t.col);
                self.pos += 1;
                Ok(out)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn factor(&mut self) -> Result<RawCond, ApiError> {
        if self.keyword("NOT") {
            return Ok(RawCond::Not(Box::new(self.factor()?)));
        }
        if self.is(&Tok::LParen) {
            self.pos += 1;
            let inner = self.condition_list()?;
            if !self.is(&Tok::RParen) {
                return Err(self.unexpected());
            }
            self.pos += 1;
            return Ok(inner);
        }
        let field = self.ident()?;
        let negated = self.keyword("NOT");
        if self.keyword("IN") {
            if !self.is(&Tok::LParen) {
                return Err(self.unexpected());
            }
            self.pos += 1;
            let mut list = vec![self.literal()?];
            while self.is(&Tok::Comma) {
                self.pos += 1;
                list.push(self.literal()?);
            }
            if !self.is(&Tok::RParen) {
                return Err(self.unexpected());
            }
            self.pos += 1;
            return Ok(RawCond::In {
                field,
                negated,
                list,
            });
        }
        if negated {
            return Err(self.unexpected());
        }
        if self.keyword("LIKE") {
            let pattern = self.literal()?;
            return Ok(RawCond::Like { field, pattern });
        }
        match self.peek() {
            Some(Token {
                tok: Tok::Op(op), ..
            }) => {
                let op = *op;
                self.pos += 1;
                let lit = self.literal()?;
                Ok(RawCond::Cmp { field, op, lit })
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// Parses and checks `soql` against `schema`.
pub fn parse(soql: &str, schema: &Schema) -> Result<Query, ApiError> {
    let toks = tokenize(soql)?;
    let mut p = Parser { soql, toks, pos: 0 };
    p.expect_keyword("SELECT")?;
    let mut count = false;
    let mut raw_fields = Vec::new();
    if let Some(Token {
        tok: Tok::Ident(s), ..
    }) = p.peek()
        && s.eq_ignore_ascii_case("COUNT")
        && p.toks.get(p.pos + 1).is_some_and(|t| t.tok == Tok::LParen)
    {
        p.pos += 2;
        if !p.is(&Tok::RParen) {
            return Err(p.malformed("only COUNT() is supported"));
        }
        p.pos += 1;
        count = true;
    } else {
        raw_fields.push(p.ident()?);
        while p.is(&Tok::Comma) {
            p.pos += 1;
            raw_fields.push(p.ident()?);
        }
    }
    p.expect_keyword("FROM")?;
    let (object_name, object_col) = p.ident()?;
    let object = schema.object(&object_name).ok_or_else(|| {
        error_at(
            soql,
            object_col,
            "INVALID_TYPE",
            &format!(
                "sObject type '{object_name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
            ),
        )
    })?;
    let raw_filter = if p.keyword("WHERE") {
        Some(p.condition_list()?)
    } else {
        None
    };
    let mut raw_order = Vec::new();
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let field = p.ident()?;
            let descending = if p.keyword("DESC") {
                true
            } else {
                p.keyword("ASC");
                false
            };
            let mut nulls_first = !descending;
            if p.keyword("NULLS") {
                if p.keyword("FIRST") {
                    nulls_first = true;
                } else if p.keyword("LAST") {
                    nulls_first = false;
                } else {
                    return Err(p.unexpected());
                }
            }
            raw_order.push((field, descending, nulls_first));
            if !p.is(&Tok::Comma) {
                break;
            }
            p.pos += 1;
        }
    }
    let mut limit = None;
    if p.keyword("LIMIT") {
        limit = Some(p.count_literal()?);
    }
    let mut offset = 0;
    if p.keyword("OFFSET") {
        offset = p.count_literal()?;
    }
    if p.peek().is_some() {
        return Err(p.unexpected());
    }

    let check = Checker { soql, object };
    let mut fields = Vec::new();
    for (name, col) in &raw_fields {
        fields.push(check.field(name, *col)?.0);
    }
    let filter = raw_filter.map(|c| check.cond(c)).transpose()?;
    let order = raw_order
        .into_iter()
        .map(|((name, col), descending, nulls_first)| {
            let (field, t) = check.field(&name, col)?;
            Ok(OrderBy {
                field,
                descending,
                nulls_first,
                exact: matches!(t, FieldType::Id | FieldType::Reference(_)),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Query {
        object: object.name.clone(),
        fields,
        count,
        filter,
        order,
        limit,
        offset,
    })
}

impl Parser<'_> {
    fn count_literal(&mut self) -> Result<usize, ApiError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Num(n), ..
            }) => {
                let v = n.parse().map_err(|_| self.unexpected())?;
                self.pos += 1;
                Ok(v)
            }
            _ => Err(self.unexpected()),
        }
    }
}

struct Checker<'a> {
    soql: &'a str,
    object: &'a ObjectDef,
}

impl Checker<'_> {
    fn field(&self, name: &str, col: usize) -> Result<(String, FieldType), ApiError> {
        self.object
            .field(name)
            .map(|f| (f.name.clone(), f.field_type.clone()))
            .ok_or_else(|| {
                error_at(
                    self.soql,
                    col,
                    "INVALID_FIELD",
                    &format!(
                        "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                        self.object.name
                    ),
                )
            })
    }

    fn lit(&self, field: &str, t: &FieldType, tok: Tok, col: usize) -> Result<Lit, ApiError> {
        let bad = |want: &str| {
            error_at(
                self.soql,
                col,
                "INVALID_FIELD",
                &format!(
                    "value of filter criterion for field '{field}' must be of type {want} and should not be enclosed in quotes"
                ),
            )
        };
        Ok(match tok {
            Tok::Ident(k) if k == "null" => Lit::Null,
            Tok::Ident(k) => {
                if *t != FieldType::Boolean {
                    return Err(bad(t.name()));
                }
                Lit::Bool(k == "true")
            }
            Tok::Str(s) => {
                if !t.is_text() {
                    return Err(bad(t.name()));
                }
                Lit::Str(s)
            }
            Tok::Num(n) => match t {
                FieldType::DateTime => {
                    Lit::DateTime(parse_datetime(&n).ok_or_else(|| bad("dateTime"))?)
                }
                FieldType::Date => Lit::Date(parse_date(&n).ok_or_else(|| bad("date"))?),
                t if t.is_number() => Lit::Num(n.parse().map_err(|_| bad(t.name()))?),
                _ => {
                    return Err(error_at(
                        self.soql,
                        col,
                        "INVALID_FIELD",
                        &format!(
                            "value of filter criterion for field '{field}' must be of type {} and should be enclosed in quotes",
                            t.name()
                        ),
                    ));
                }
            },
            _ => return Err(bad(t.name())),
        })
    }

    fn cond(&self, c: RawCond) -> Result<Cond, ApiError> {
        Ok(match c {
            RawCond::And(v) => Cond::And(
                v.into_iter()
                    .map(|c| self.cond(c))
                    .collect::<Result<_, _>>()?,
            ),
            RawCond::Or(v) => Cond::Or(
                v.into_iter()
                    .map(|c| self.cond(c))
                    .collect::<Result<_, _>>()?,
            ),
            RawCond::Not(c) => Cond::Not(Box::new(self.cond(*c)?)),
            RawCond::Cmp {
                field: (name, col),
                op,
                lit: (tok, lcol),
            } => {
                let (field, t) = self.field(&name, col)?;
                let lit = self.lit(&field, &t, tok, lcol)?;
                if matches!(lit, Lit::Null) && !matches!(op, "=" | "!=") {
                    return Err(error_at(
                        self.soql,
                        lcol,
                        "MALFORMED_QUERY",
                        "null can only be compared with = or !=",
                    ));
                }
                Cond::Cmp { field, op, lit }
            }
            RawCond::In {
                field: (name, col),
                negated,
                list,
            } => {
                let (field, t) = self.field(&name, col)?;
                let list = list
                    .into_iter()
                    .map(|(tok, lcol)| self.lit(&field, &t, tok, lcol))
                    .collect::<Result<_, _>>()?;
                Cond::In {
                    field,
                    negated,
                    list,
                }
            }
            RawCond::Like {
                field: (name, col),
                pattern: (tok, lcol),
            } => {
                let (field, t) = self.field(&name, col)?;
                match self.lit(&field, &t, tok, lcol)? {
                    Lit::Str(pattern) => Cond::Like { field, pattern },
                    _ => {
                        return Err(error_at(
                            self.soql,
                            lcol,
                            "INVALID_FIELD",
                            "LIKE needs a string",
                        ));
                    }
                }
            }
        })
    }
}

/// Compares a stored value with a literal, by the literal's type. `None`: not comparable
/// (the stored value is null, or of another type).
fn compare(v: &Value, lit: &Lit) -> Option<Ordering> {
    match (v, lit) {
        (Value::Null, _) | (_, Lit::Null) => None,
        (Value::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Value::Number(a), Lit::Num(b)) => Some(a.cmp(b)),
        (Value::Text(a), Lit::Str(b)) => {
            // Ids compare on their 15-character case-sensitive form as well.
            if a.len() == 18 && b.len() == 15 && a.starts_with(b.as_str()) {
                return Some(Ordering::Equal);
            }
            Some(a.to_lowercase().cmp(&b.to_lowercase()))
        }
        (Value::Text(a), Lit::DateTime(b)) => parse_datetime(a).map(|a| a.cmp(b)),
        (Value::Text(a), Lit::Date(b)) => parse_date(a).map(|a| a.cmp(b)),
        _ => None,
    }
}

fn like(text: &str, pattern: &str) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
            Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
            Some((c, rest)) => t.first().is_some_and(|x| x == c) && go(&t[1..], rest),
        }
    }
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&t, &p)
}

impl Cond {
    pub fn matches(&self, row: &BTreeMap<String, Value>) -> bool {
        let get = |f: &str| row.get(f).unwrap_or(&Value::Null);
        match self {
            Cond::And(v) => v.iter().all(|c| c.matches(row)),
            Cond::Or(v) => v.iter().any(|c| c.matches(row)),
            Cond::Not(c) => !c.matches(row),
            Cond::Cmp { field, op, lit } => {
                let v = get(field);
                if let Lit::Null = lit {
                    return (*op == "=") == v.is_null();
                }
                match (compare(v, lit), *op) {
                    (None, "!=") => true,
                    (None, _) => false,
                    (Some(o), "=") => o == Ordering::Equal,
                    (Some(o), "!=") => o != Ordering::Equal,
                    (Some(o), "<") => o == Ordering::Less,
                    (Some(o), "<=") => o != Ordering::Greater,
                    (Some(o), ">") => o == Ordering::Greater,
                    (Some(o), _) => o != Ordering::Less,
                }
            }
            Cond::In {
                field,
                negated,
                list,
            } => {
                let v = get(field);
                let found = list.iter().any(|l| match l {
                    Lit::Null => v.is_null(),
                    l => compare(v, l) == Some(Ordering::Equal),
                });
                found != *negated
            }
            Cond::Like { field, pattern } => get(field).as_str().is_some_and(|t| like(t, pattern)),
        }
    }
}

/// Orders two stored values of one field: nulls by `nulls_first`, then by type.
fn order_values(a: &Value, b: &Value, nulls_first: bool, exact: bool) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (_, Value::Null) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Value::Number(x), Value::Number(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) if exact => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => match (parse_datetime(x), parse_datetime(y)) {
            (Some(dx), Some(dy)) => dx.cmp(&dy),
            _ => x
                .to_lowercase()
                .cmp(&y.to_lowercase())
                .then_with(|| x.cmp(y)),
        },
        _ => Ordering::Equal,
    }
}

impl Query {
    /// Sorts rows (in place) by the ORDER BY list.
    pub fn sort(&self, rows: &mut [&BTreeMap<String, Value>]) {
        if self.order.is_empty() {
            return;
        }
        rows.sort_by(|a, b| {
            for o in &self.order {
                let va = a.get(&o.field).unwrap_or(&Value::Null);
                let vb = b.get(&o.field).unwrap_or(&Value::Null);
                // Nulls placement is absolute; DESC reverses only the non-null order.
                let ord = match (va.is_null(), vb.is_null()) {
                    (false, false) if o.descending => order_values(vb, va, o.nulls_first, o.exact),
                    _ => order_values(va, vb, o.nulls_first, o.exact),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::default_org()
    }

    fn check_ok(soql: &str) -> Query {
        parse(soql, &schema()).unwrap_or_else(|e| panic!("{soql}: {e}"))
    }

    fn check_err(soql: &str, code: &str, contains: &str) {
        let e = parse(soql, &schema()).expect_err(soql);
        assert_eq!(e.error_code, code, "{soql}: {}", e.message);
        assert!(e.message.contains(contains), "{soql}: {}", e.message);
    }

    #[test]
    fn parses_the_client_subset() {
        let q = check_ok(
            "SELECT Id, Name, SystemModstamp FROM Account WHERE SystemModstamp > 2026-11-01T00:00:00Z ORDER BY SystemModstamp, Id LIMIT 10",
        );
        assert_eq!(q.fields, ["Id", "Name", "SystemModstamp"]);
        assert_eq!(q.limit, Some(10));
        check_ok("select id from account where name in ('a','b') and isdeleted = false");
        check_ok(
            "SELECT Id FROM Opportunity WHERE (StageName = 'Closed Won' OR Amount >= 10.50) AND Name LIKE 'A%'",
        );
        check_ok("SELECT COUNT() FROM Account WHERE Sage_Customer_Id__c != null");
        check_ok(
            "SELECT Id FROM Opportunity WHERE CloseDate <= 2026-12-31 ORDER BY Amount DESC NULLS LAST",
        );
        check_ok("SELECT Id FROM Account WHERE Name = 'O\\'Brien'");
    }

    #[test]
    fn errors_have_salesforce_shape() {
        check_err(
            "SELECT Id, Foo FROM Account",
            "INVALID_FIELD",
            "No such column 'Foo' on entity 'Account'",
        );
        check_err(
            "SELECT Id, Foo FROM Account",
            "INVALID_FIELD",
            "ERROR at Row:1:Column:12",
        );
        check_err(
            "SELECT Id FROM Nope",
            "INVALID_TYPE",
            "sObject type 'Nope' is not supported",
        );
        check_err(
            "SELECT Id FROM Account WHERE",
            "MALFORMED_QUERY",
            "unexpected token: <EOF>",
        );
        check_err(
            "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",
            "MALFORMED_QUERY",
            "unexpected token: 'OR'",
        );
        check_err(
            "SELECT Id FROM Account WHERE SystemModstamp > '2026-01-01'",
            "INVALID_FIELD",
            "must be of type datetime",
        );
        check_err(
            "SELECT FROM Account",
            "MALFORMED_QUERY",
            "unexpected token: 'FROM'",
        );
        check_err("SELECT Id FROM Account LIMIT", "MALFORMED_QUERY", "<EOF>");
    }

    #[test]
    fn evaluates() {
        let q =
            check_ok("SELECT Id FROM Account WHERE Name LIKE 'ac%' AND Sage_Customer_Id__c = null");
        let mut row = BTreeMap::new();
        row.insert("Name".to_owned(), Value::text("Acme"));
        assert!(q.filter.as_ref().unwrap().matches(&row));
        row.insert("Sage_Customer_Id__c".to_owned(), Value::text("C1"));
        assert!(!q.filter.as_ref().unwrap().matches(&row));
    }
}
