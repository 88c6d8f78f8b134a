//! Multi-folder routing: which X3 folder (endpoint), sales site (`SALFCY`) and shipping
//! site (`STOFCY`) an account's documents go to, chosen by configured rules. Pure: no I/O,
//! first matching rule wins, a default catches the rest.

/// Where one account's documents go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The X3 folder / endpoint (`SEED`, `UKLIVE`).
    pub folder: String,
    /// `SALFCY`.
    pub sales_site: String,
    /// `STOFCY`.
    pub shipping_site: String,
}

impl Route {
    pub fn new(folder: &str, sales_site: &str, shipping_site: &str) -> Route {
        Route {
            folder: folder.into(),
            sales_site: sales_site.into(),
            shipping_site: shipping_site.into(),
        }
    }
}

/// When a rule applies. Every non-empty condition must hold; values compare
/// case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteWhen {
    /// ISO country codes of the billing address (`FR`, `GB`).
    pub billing_countries: Vec<String>,
    /// ISO currency codes of the account / opportunity.
    pub currencies: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    pub when: RouteWhen,
    pub route: Route,
}

/// What routing looks at on an account.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccountFacts<'a> {
    pub billing_country: Option<&'a str>,
    pub currency: Option<&'a str>,
}

/// A configuration that cannot route.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid X3 routing: {0}")]
pub struct RoutingError(pub String);

/// Most rules a routing table may hold.
pub const RULES_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X3Routing {
    rules: Vec<RouteRule>,
    default: Route,
}

fn check_route(r: &Route, at: &str) -> Result<(), RoutingError> {
    for (name, v) in [
        ("folder", &r.folder),
        ("sales site", &r.sales_site),
        ("shipping site", &r.shipping_site),
    ] {
        if v.trim().is_empty() {
            return Err(RoutingError(format!("{at}: empty {name}")));
        }
    }
    Ok(())
}

fn any_matches(allowed: &[String], value: Option<&str>) -> bool {
    allowed.is_empty()
        || value.is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v.trim())))
}

impl X3Routing {
    /// Validates the table: non-empty folder and sites everywhere, at most [`RULES_MAX`]
    /// rules, and no rule without a condition (it would shadow the default and every rule
    /// after it).
    pub fn new(rules: Vec<RouteRule>, default: Route) -> Result<X3Routing, RoutingError> {
        if rules.len() > RULES_MAX {
            return Err(RoutingError(format!("more than {RULES_MAX} rules")));
        }
        check_route(&default, "default")?;
        for (i, rule) in rules.iter().enumerate() {
            check_route(&rule.route, &format!("rule {}", i + 1))?;
            if rule.when.billing_countries.is_empty() && rule.when.currencies.is_empty() {
                return Err(RoutingError(format!("rule {} has no condition", i + 1)));
            }
        }
        Ok(X3Routing { rules, default })
    }

    /// The route of an account: the first rule whose conditions all hold, else the default.
    pub fn route(&self, account: AccountFacts<'_>) -> &Route {
        self.rules
            .iter()
            .find(|r| {
                any_matches(&r.when.billing_countries, account.billing_country)
                    && any_matches(&r.when.currencies, account.currency)
            })
            .map_or(&self.default, |r| &r.route)
    }

    /// Every folder the table can route to (default first, then in rule order, no repeats).
    pub fn folders(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![self.default.folder.as_str()];
        for r in &self.rules {
            if !out.contains(&r.route.folder.as_str()) {
                out.push(&r.route.folder);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> X3Routing {
        let rule = |countries: &[&str], currencies: &[&str], route: Route| RouteRule {
            when: RouteWhen {
                billing_countries: countries.iter().map(|s| (*s).to_owned()).collect(),
                currencies: currencies.iter().map(|s| (*s).to_owned()).collect(),
            },
            route,
        };
        X3Routing::new(
            vec![
                rule(&["GB", "IE"], &[], Route::new("UKLIVE", "GB011", "GB012")),
                rule(&["FR"], &["USD"], Route::new("SEED", "FR013", "FR014")),
                rule(&["FR", "BE"], &[], Route::new("SEED", "FR011", "FR012")),
            ],
            Route::new("SEED", "US011", "US012"),
        )
        .unwrap()
    }

    #[track_caller]
    fn check(country: Option<&str>, currency: Option<&str>, expected: (&str, &str, &str)) {
        let r = routing();
        let got = r.route(AccountFacts {
            billing_country: country,
            currency,
        });
        assert_eq!(
            (
                got.folder.as_str(),
                got.sales_site.as_str(),
                got.shipping_site.as_str()
            ),
            expected
        );
    }

    #[test]
    fn routes_by_rule_then_default() {
        check(Some("GB"), None, ("UKLIVE", "GB011", "GB012"));
        check(Some("ie"), Some("EUR"), ("UKLIVE", "GB011", "GB012"));
        check(Some("FR"), Some("USD"), ("SEED", "FR013", "FR014"));
        check(Some("FR"), Some("EUR"), ("SEED", "FR011", "FR012"));
        check(Some(" be "), None, ("SEED", "FR011", "FR012"));
        check(Some("DE"), None, ("SEED", "US011", "US012"));
        check(None, Some("GBP"), ("SEED", "US011", "US012"));
        check(None, None, ("SEED", "US011", "US012"));
        assert_eq!(routing().folders(), vec!["SEED", "UKLIVE"]);
    }

    #[test]
    fn refuses_bad_tables() {
        let default = Route::new("SEED", "US011", "US012");
        let empty_site = X3Routing::new(vec![], Route::new("SEED", "", "US012"));
        assert_eq!(
            empty_site,
            Err(RoutingError("default: empty sales site".into()))
        );
        let catch_all = X3Routing::new(
            vec![RouteRule {
                when: RouteWhen::default(),
                route: default.clone(),
            }],
            default.clone(),
        );
        assert_eq!(
            catch_all,
            Err(RoutingError("rule 1 has no condition".into()))
        );
        let too_many = X3Routing::new(
            vec![
                RouteRule {
                    when: RouteWhen {
                        billing_countries: vec!["FR".into()],
                        currencies: vec![],
                    },
                    route: default.clone(),
                };
                RULES_MAX + 1
            ],
            default,
        );
        assert!(too_many.is_err());
    }
}
