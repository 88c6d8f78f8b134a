//! The subset of X3 expressions the simulator evaluates in `where` and `orderBy`:
//! `FIELD op literal` with `eq ne gt ge lt le` (or `= <> > >= < <=`), joined with
//! `and` / `or`, parenthesised; literals in `'…'` (`''` for a quote), `"…"` or bare numbers.
//! Values compare as decimals when both sides are numbers, else as text. Functions
//! (`left()`, `upper()`, `like`) are refused as unsupported.

use std::cmp::Ordering;

use rust_decimal::Decimal;

use crate::x3::record::X3Record;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Cmp {
        field: String,
        op: CmpOp,
        value: String,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Lit(String),
    Op(CmpOp),
    LParen,
    RParen,
}

fn keyword_op(word: &str) -> Option<CmpOp> {
    Some(match word.to_ascii_lowercase().as_str() {
        "eq" => CmpOp::Eq,
        "ne" => CmpOp::Ne,
        "gt" => CmpOp::Gt,
        "ge" => CmpOp::Ge,
        "lt" => CmpOp::Lt,
        "le" => CmpOp::Le,
        _ => return None,
    })
}

fn lex(input: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some(&q) if q == quote => {
                            if chars.get(i + 1) == Some(&quote) {
                                s.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Lit(s));
            }
            '=' => {
                out.push(Tok::Op(CmpOp::Eq));
                i += 1;
            }
            '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('>')) => (CmpOp::Ne, 2),
                    ('<', Some('=')) => (CmpOp::Le, 2),
                    ('>', Some('=')) => (CmpOp::Ge, 2),
                    ('<', _) => (CmpOp::Lt, 1),
                    _ => (CmpOp::Gt, 1),
                };
                out.push(Tok::Op(op));
                i += len;
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Lit(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if chars.get(i) == Some(&'(') {
                    return Err(format!("unsupported function {word}()"));
                }
                match keyword_op(&word) {
                    Some(op) => out.push(Tok::Op(op)),
                    None => out.push(Tok::Ident(word)),
                }
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.factor()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, String> {
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        match tok {
            Some(Tok::LParen) => {
                let e = self.or()?;
                match self.toks.get(self.pos) {
                    Some(Tok::RParen) => {
                        self.pos += 1;
                        Ok(e)
                    }
                    _ => Err("missing )".into()),
                }
            }
            Some(Tok::Ident(field)) => {
                let op = match self.toks.get(self.pos) {
                    Some(Tok::Op(op)) => *op,
                    Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("like") => {
                        return Err("unsupported operator like".into());
                    }
                    _ => return Err(format!("expected an operator after {field}")),
                };
                self.pos += 1;
                let value = match self.toks.get(self.pos) {
                    Some(Tok::Lit(v)) => v.clone(),
                    _ => return Err(format!("expected a literal after {field}")),
                };
                self.pos += 1;
                Ok(Expr::Cmp { field, op, value })
            }
            _ => Err("expected a comparison".into()),
        }
    }
}

/// Parses a `where` expression.
pub fn parse_where(input: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: lex(input)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err("trailing input in where".into());
    }
    Ok(e)
}

/// Parses `orderBy`: `F1 desc, F2 asc` (also `;`-separated); `(field, ascending)`.
pub fn parse_order_by(input: &str) -> Result<Vec<(String, bool)>, String> {
    let mut out = Vec::new();
    for part in input.split([',', ';']) {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            [f] => out.push(((*f).to_owned(), true)),
            [f, dir] if dir.eq_ignore_ascii_case("asc") => out.push(((*f).to_owned(), true)),
            [f, dir] if dir.eq_ignore_ascii_case("desc") => out.push(((*f).to_owned(), false)),
            _ => return Err(format!("bad orderBy term {part:?}")),
        }
    }
    Ok(out)
}

impl Expr {
    /// Every field the expression names.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Expr::Cmp { field, .. } => vec![field.as_str()],
            Expr::And(a, b) | Expr::Or(a, b) => {
                let mut v = a.fields();
                v.extend(b.fields());
                v
            }
        }
    }

    pub fn matches(&self, rec: &X3Record) -> bool {
        match self {
            Expr::Cmp { field, op, value } => {
                let ord = compare_values(rec.text(field), value);
                match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::Ne => ord != Ordering::Equal,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Ge => ord != Ordering::Less,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Le => ord != Ordering::Greater,
                }
            }
            Expr::And(a, b) => a.matches(rec) && b.matches(rec),
            Expr::Or(a, b) => a.matches(rec) || b.matches(rec),
        }
    }
}

/// Decimal comparison when both are numbers, text otherwise.
pub fn compare_values(a: &str, b: &str) -> Ordering {
    match (a.trim().parse::<Decimal>(), b.trim().parse::<Decimal>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(expr: &str, rec: &X3Record, expected: bool) {
        assert_eq!(parse_where(expr).unwrap().matches(rec), expected, "{expr}");
    }

    #[test]
    fn evaluates_comparisons() {
        let rec = X3Record::new()
            .with("BPCNUM", "C00012")
            .with("CRY", "FR")
            .with("AMT", "10.5")
            .with("NAME", "O'Brien");
        check("BPCNUM eq 'C00012'", &rec, true);
        check("BPCNUM gt 'C00011' and CRY eq \"FR\"", &rec, true);
        check("(CRY eq 'GB' or CRY = 'FR') and AMT >= 10.5", &rec, true);
        check("AMT gt 9", &rec, true);
        check("AMT lt '10.50'", &rec, false);
        check("NAME eq 'O''Brien'", &rec, true);
        check("CRY <> 'FR'", &rec, false);
        assert!(parse_where("left(BPCNAM,4) eq 'Test'").is_err());
        assert!(parse_where("NAME like '%x%'").is_err());
        assert!(parse_where("BPCNUM eq").is_err());
        assert_eq!(
            parse_where("A eq 1 and B eq 2").unwrap().fields(),
            vec!["A", "B"]
        );
        assert_eq!(
            parse_order_by("BPCNAM desc, BPCNUM asc").unwrap(),
            vec![("BPCNAM".into(), false), ("BPCNUM".into(), true)]
        );
        assert!(parse_order_by("A up").is_err());
    }
}
