//! The X3 classes cashloop uses, their key, and how their fields are laid out in the SOAP
//! `objectXml` (`<GRP ID>` blocks, `<LST>` dimensioned fields, `<TAB ID>` line tables).
//! Client and simulator share it, so both sides agree on where a field goes.
//!
//! Group and table ids follow the screens public X3 integrations post (`SOH0_1`, `SOH2_1`,
//! `SOH4_1` on SORDER, `BPAC_1` on BPCUSTOMER, protocols.md §3.4). For SINVOICE, ITMMASTER,
//! STOCK and PAYMENTH no public payload sample exists: their block ids are our choice and
//! must be checked against `$prototypes` of the customer's X3 version. Custom fields (the
//! Salesforce id, `YSFID` by default) go in the class's first group.

/// One class: its key field, header groups, dimensioned fields and line tables.
#[derive(Debug)]
pub struct ClassSchema {
    pub class: &'static str,
    pub key: &'static str,
    /// `(GRP ID, fields)`; the first group also takes fields the schema does not list.
    pub groups: &'static [(&'static str, &'static [&'static str])],
    /// Dimensioned fields sent as `<LST NAME SIZE>` (`BPRNAM`, size 2).
    pub lists: &'static [(&'static str, usize)],
    /// `(TAB ID, line fields)`; the same id names the embedded array on REST.
    pub tables: &'static [(&'static str, &'static [&'static str])],
}

impl ClassSchema {
    /// The group a header field belongs to (the first group for fields not listed).
    pub fn group_of(&self, field: &str) -> &'static str {
        self.groups
            .iter()
            .find(|(_, fields)| fields.contains(&field))
            .or(self.groups.first())
            .map_or("GRP1", |(id, _)| id)
    }

    /// Whether the header (groups) lists this field.
    pub fn has_field(&self, field: &str) -> bool {
        self.groups
            .iter()
            .any(|(_, fields)| fields.contains(&field))
    }

    pub fn list_size(&self, field: &str) -> Option<usize> {
        self.lists
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, n)| *n)
    }

    pub fn table(&self, id: &str) -> Option<&'static [&'static str]> {
        self.tables.iter().find(|(t, _)| *t == id).map(|(_, f)| *f)
    }
}

pub const BPCUSTOMER: ClassSchema = ClassSchema {
    class: "BPCUSTOMER",
    key: "BPCNUM",
    groups: &[
        (
            "BPC0_1",
            &["BPCNUM", "BPRNAM", "BCGCOD", "CRN", "CRY", "CUR"],
        ),
        ("BPC1_3", &["BPAINV", "BPAPYR", "PTE"]),
    ],
    lists: &[("BPRNAM", 2)],
    tables: &[(
        "BPAC_1",
        &[
            "CODADR", "BPADES", "ADDLIG1", "ADDLIG2", "ADDLIG3", "POSCOD", "CTY", "BPACRY",
        ],
    )],
};

pub const SORDER: ClassSchema = ClassSchema {
    class: "SORDER",
    key: "SOHNUM",
    groups: &[
        (
            "SOH0_1",
            &[
                "SALFCY",
                "SOHTYP",
                "SOHNUM",
                "CUSORDREF",
                "ORDDAT",
                "BPCORD",
                "CUR",
            ],
        ),
        ("SOH1_1", &["BPAADD"]),
        ("SOH2_1", &["STOFCY"]),
        ("SOH4_4", &["ORDNOT", "INVSTA"]),
    ],
    lists: &[],
    tables: &[("SOH4_1", &["ITMREF", "ITMDES", "QTY", "GROPRI"])],
};

pub const SINVOICE: ClassSchema = ClassSchema {
    class: "SINVOICE",
    key: "NUM",
    groups: &[
        (
            "SIH0_1",
            &[
                "NUM",
                "SIVTYP",
                "INVTYP",
                "SALFCY",
                "BPCINV",
                "BPCORD",
                "INVDAT",
                "CUR",
                "SOHNUM",
                "SIHORINUM",
            ],
        ),
        ("SIH4_3", &["AMTNOT", "AMTATI"]),
        ("SIH5_1", &["PAYCUR"]),
    ],
    lists: &[],
    tables: &[("SIH4_1", &["ITMREF", "QTY", "GROPRI", "AMTNOTLIN"])],
};

pub const ITMMASTER: ClassSchema = ClassSchema {
    class: "ITMMASTER",
    key: "ITMREF",
    groups: &[("ITM0_1", &["ITMREF", "ITMDES1", "TCLCOD", "STU"])],
    lists: &[],
    tables: &[],
};

pub const STOCK: ClassSchema = ClassSchema {
    class: "STOCK",
    key: "STOCKID",
    groups: &[(
        "STO0_1",
        &[
            "STOCKID", "STOFCY", "ITMREF", "LOT", "LOC", "STA", "QTYSTU", "STU",
        ],
    )],
    lists: &[],
    tables: &[],
};

pub const PAYMENTH: ClassSchema = ClassSchema {
    class: "PAYMENTH",
    key: "NUM",
    groups: &[(
        "PAYH0_1",
        &[
            "NUM", "PAYTYP", "BPR", "FCY", "ACCDAT", "CUR", "AMTCUR", "BAN", "REF",
        ],
    )],
    lists: &[],
    tables: &[("PAYD_1", &["VCRNUM", "AMTLIN"])],
};

/// Every class the client and the simulator know.
pub const CLASSES: &[&ClassSchema] = &[
    &BPCUSTOMER,
    &SORDER,
    &SINVOICE,
    &ITMMASTER,
    &STOCK,
    &PAYMENTH,
];

/// The schema of a class (exact, upper-case name).
pub fn schema(class: &str) -> Option<&'static ClassSchema> {
    CLASSES.iter().copied().find(|s| s.class == class)
}

/// The class of this installation for one of our objects: its name, representation and
/// SOAP public web service name (all site-specific in X3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    pub class: String,
    pub representation: String,
    pub public_name: String,
}

impl ObjectName {
    pub fn new(class: &str, representation: &str, public_name: &str) -> ObjectName {
        ObjectName {
            class: class.into(),
            representation: representation.into(),
            public_name: public_name.into(),
        }
    }

    /// The schema of this object's class (falls back to the first group only layout when the
    /// class is not one we know).
    pub fn schema(&self) -> Option<&'static ClassSchema> {
        schema(&self.class)
    }
}

/// The names of our objects in one X3 installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectNames {
    pub customer: ObjectName,
    pub order: ObjectName,
    pub invoice: ObjectName,
    pub item: ObjectName,
    pub stock: ObjectName,
    pub payment: ObjectName,
}

/// Default SOAP public names (each site publishes its own; the simulator uses these).
pub const DEFAULT_PUBLIC_NAMES: &[(&str, &str)] = &[
    ("BPCUSTOMER", "BPC"),
    ("SORDER", "SOH"),
    ("SINVOICE", "SIH"),
    ("ITMMASTER", "ITM"),
    ("STOCK", "STO"),
    ("PAYMENTH", "PAY"),
];

impl Default for ObjectNames {
    fn default() -> ObjectNames {
        let name = |class: &str| {
            let public = DEFAULT_PUBLIC_NAMES
                .iter()
                .find(|(c, _)| *c == class)
                .map_or(class, |(_, p)| p);
            ObjectName::new(class, class, public)
        };
        ObjectNames {
            customer: name("BPCUSTOMER"),
            order: name("SORDER"),
            invoice: name("SINVOICE"),
            item: name("ITMMASTER"),
            stock: name("STOCK"),
            payment: name("PAYMENTH"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_fallbacks() {
        assert_eq!(SORDER.group_of("STOFCY"), "SOH2_1");
        assert_eq!(SORDER.group_of("SALFCY"), "SOH0_1");
        assert_eq!(BPCUSTOMER.group_of("YSFID"), "BPC0_1", "custom field");
        assert_eq!(BPCUSTOMER.list_size("BPRNAM"), Some(2));
        assert_eq!(SORDER.table("SOH4_1").map(|f| f.len()), Some(4));
        assert!(schema("NOPE").is_none());
        let names = ObjectNames::default();
        assert_eq!(names.order.public_name, "SOH");
        assert_eq!(names.order.representation, "SORDER");
    }
}
