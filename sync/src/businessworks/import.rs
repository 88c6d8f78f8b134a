//! Writes into BusinessWorks as import files, read back through the import's log.
//!
//! BusinessWorks takes data in through its own import utilities (comma-delimited files), never
//! by writing its data files. The layouts below follow the import utility's comma-delimited
//! format as far as it is public (one record per line, fields separated by commas, text in
//! double quotes with `""` for a quote inside, numbers unquoted, dates `MM/DD/YYYY`); the field
//! order is ours and **must be checked against the installed version's import templates**
//! (and the import set up to map these fields) before production use.
//!
//! * Customer file `CUST_<h>.csv` (A/R customer import), one line:
//!   `"CustomerNo","CustomerName","Address1","City","State","ZipCode","Country","Phone","Email","SalesforceId"`
//! * Order file `ORDER_<h>.csv` (O/E order import), a header line then one line per item:
//!   `"H","OrderNo","CustomerNo",MM/DD/YYYY,"CustomerPO","SalesforceId"` and
//!   `"L","OrderNo","ItemCode",Quantity,UnitPrice` (quantity a decimal, price 2 decimals).
//!
//! `<h>` is the first 16 hex digits of SHA-256(idempotency key), so a re-delivered command
//! names the same file. Lines end with CRLF; the files are written under a temporary name
//! (`.<name>.tmp`) and renamed into the import folder, so the import never reads half a file.
//! A text value holding a line break is refused (the format has no escape for it).
//!
//! The import's result is read from its log, `<log folder>/<file stem>.log`: one
//! comma-delimited line per document, `ACCEPTED,"<key>",""` or `REJECTED,"<key>","<reason>"`
//! (key = customer number or order number). The real import utility writes a printable report:
//! an installation maps it to this form (the simulator writes this form directly).

use std::path::{Path, PathBuf};

use sha2::Digest;

/// Where import files go and where the import's log comes back.
#[derive(Clone, Debug)]
pub struct ImportFolder {
    pub dir: PathBuf,
    /// The import's logs (default `<dir>/log`).
    pub log_dir: PathBuf,
}

impl ImportFolder {
    pub fn new(dir: impl Into<PathBuf>) -> ImportFolder {
        let dir = dir.into();
        ImportFolder {
            log_dir: dir.join("log"),
            dir,
        }
    }

    /// Processed files (moved there by the import).
    pub fn processed_dir(&self) -> PathBuf {
        self.dir.join("processed")
    }

    pub fn log_path(&self, file: &str) -> PathBuf {
        let stem = Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.log_dir.join(format!("{stem}.log"))
    }

    /// Whether `file` is still waiting in the folder or was processed.
    pub fn file_present(&self, file: &str) -> bool {
        self.dir.join(file).exists() || self.processed_dir().join(file).exists()
    }

    /// Writes `content` as `file`: under a temporary name, then renamed into the folder.
    pub async fn write(&self, file: &str, content: &str) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        tokio::fs::write(&tmp, content.as_bytes()).await?;
        tokio::fs::rename(&tmp, self.dir.join(file)).await
    }

    /// The log's entry for `key` in the log of `file`: `None` while there is no log yet.
    pub async fn log_entry(&self, file: &str, key: &str) -> std::io::Result<Option<LogEntry>> {
        let text = match tokio::fs::read_to_string(self.log_path(file)).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let entries = parse_log(&text);
        Ok(Some(entries.into_iter().find(|e| e.key == key).unwrap_or(
            LogEntry {
                accepted: false,
                key: key.to_owned(),
                message: format!("the import log of {file} has no record for {key}"),
            },
        )))
    }
}

/// One document's line in an import log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub accepted: bool,
    pub key: String,
    pub message: String,
}

pub fn parse_log(text: &str) -> Vec<LogEntry> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    rd.records()
        .filter_map(Result::ok)
        .filter(|r| r.len() >= 2)
        .map(|r| LogEntry {
            accepted: r[0].eq_ignore_ascii_case("ACCEPTED"),
            key: r[1].to_owned(),
            message: r.get(2).unwrap_or_default().to_owned(),
        })
        .collect()
}

/// A log's text for `entries` (what the simulator writes).
pub fn format_log(entries: &[LogEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "{},{},{}\r\n",
                if e.accepted { "ACCEPTED" } else { "REJECTED" },
                quote(&e.key),
                quote(&e.message.replace(['\r', '\n'], " "))
            )
        })
        .collect()
}

/// A text field in double quotes.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The file name for a command: `<prefix>_<first 16 hex of SHA-256(idempotency key)>.csv`.
pub fn file_name(prefix: &str, idempotency_key: &str) -> String {
    format!(
        "{prefix}_{}.csv",
        &hex::encode(sha2::Sha256::digest(idempotency_key.as_bytes()))[..16]
    )
}

fn text_fields(fields: &[&str]) -> Result<Vec<String>, String> {
    fields
        .iter()
        .map(|f| {
            if f.contains(['\r', '\n']) {
                Err(format!(
                    "{f:?} holds a line break, which an import file cannot carry"
                ))
            } else {
                Ok(quote(f))
            }
        })
        .collect()
}

/// A customer import record.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerRecord {
    pub customer_no: String,
    pub name: String,
    pub address1: String,
    pub city: String,
    pub state: String,
    pub zip_code: String,
    pub country: String,
    pub phone: String,
    pub email: String,
    pub salesforce_id: String,
}

impl CustomerRecord {
    pub fn to_file(&self) -> Result<String, String> {
        let f = text_fields(&[
            &self.customer_no,
            &self.name,
            &self.address1,
            &self.city,
            &self.state,
            &self.zip_code,
            &self.country,
            &self.phone,
            &self.email,
            &self.salesforce_id,
        ])?;
        Ok(format!("{}\r\n", f.join(",")))
    }
}

/// An order import: header and lines.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderRecord {
    pub order_no: String,
    pub customer_no: String,
    /// `YYYYMMDD`.
    pub order_date: String,
    pub customer_po: String,
    pub salesforce_id: String,
    pub lines: Vec<OrderLineRecord>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderLineRecord {
    pub item_code: String,
    /// Decimal text.
    pub quantity: String,
    /// Decimal text, 2 places.
    pub unit_price: String,
}

/// `YYYYMMDD` as the file's `MM/DD/YYYY`.
pub fn file_date(yyyymmdd: &str) -> Result<String, String> {
    chrono::NaiveDate::parse_from_str(yyyymmdd, "%Y%m%d")
        .map(|d| d.format("%m/%d/%Y").to_string())
        .map_err(|_| format!("{yyyymmdd:?} is not a YYYYMMDD date"))
}

impl OrderRecord {
    pub fn to_file(&self) -> Result<String, String> {
        let h = text_fields(&[
            "H",
            &self.order_no,
            &self.customer_no,
            &self.customer_po,
            &self.salesforce_id,
        ])?;
        let mut out = format!(
            "{},{},{},{},{},{}\r\n",
            h[0],
            h[1],
            h[2],
            file_date(&self.order_date)?,
            h[3],
            h[4]
        );
        for l in &self.lines {
            let t = text_fields(&["L", &self.order_no, &l.item_code])?;
            out.push_str(&format!(
                "{},{},{},{},{}\r\n",
                t[0], t[1], t[2], l.quantity, l.unit_price
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_quote_text_and_logs_round_trip() {
        let o = OrderRecord {
            order_no: "000101".into(),
            customer_no: "ACME".into(),
            order_date: "20261126".into(),
            customer_po: "PO \"7\"".into(),
            salesforce_id: "006xx".into(),
            lines: vec![OrderLineRecord {
                item_code: "WIDGET".into(),
                quantity: "2".into(),
                unit_price: "10.50".into(),
            }],
        };
        assert_eq!(
            o.to_file().unwrap(),
            "\"H\",\"000101\",\"ACME\",11/26/2026,\"PO \"\"7\"\"\",\"006xx\"\r\n\"L\",\"000101\",\"WIDGET\",2,10.50\r\n"
        );
        let mut bad = o.clone();
        bad.customer_po = "a\nb".into();
        assert!(bad.to_file().is_err());
        let entries = vec![
            LogEntry {
                accepted: true,
                key: "A".into(),
                message: String::new(),
            },
            LogEntry {
                accepted: false,
                key: "B, Inc".into(),
                message: "Customer \"B\" not found".into(),
            },
        ];
        assert_eq!(parse_log(&format_log(&entries)), entries);
        assert_eq!(file_name("CUST", "k1"), file_name("CUST", "k1"));
        assert_ne!(file_name("CUST", "k1"), file_name("CUST", "k2"));
    }
}
