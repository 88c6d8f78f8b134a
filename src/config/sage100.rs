//! `[sync.sage100]` and `[sync.businessworks]`: the on-premise Sage lines, reached through an
//! agent (`[[agents]]`) that executes the loop's commands. Same shape for both lines; one Sage
//! line per installation (refused together with `[sync.intacct]`, `[sync.x3]` or each other).

use std::collections::BTreeMap;

use ledger::EntityCode;
use serde::{Deserialize, Serialize};
use sync::objects::SageLine;

use super::{ConfigError, RawAgent, RawQ2cLedger, bad};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncAgentLine {
    /// The `[[agents]]` name commands are addressed to.
    pub agent: String,
    /// `ARDivisionNo` of customers made (Sage 100: required, e.g. `"01"`; BusinessWorks has
    /// no divisions: `"00"`).
    pub ar_division_no: Option<String>,
    /// The company's currency (default `USD`): these lines keep one.
    pub currency: Option<String>,
    /// How often changed invoices are read (default 300).
    pub poll_interval_s: Option<u64>,
    /// The most invoices one read returns (default 500).
    pub max_rows: Option<u32>,
    /// Ledger accounts per currency (`[sync.sage100.ledger.USD]`).
    #[serde(default)]
    pub ledger: BTreeMap<String, RawQ2cLedger>,
}

/// An agent-backed line's loop settings.
#[derive(Clone, Debug)]
pub struct AgentLineSettings {
    pub config: sync::agent_loop::AgentLoopConfig,
    pub poll_interval_s: u64,
}

pub(super) fn agent_line_settings(
    line: SageLine,
    c: &RawSyncAgentLine,
    agents: &[RawAgent],
    default_entity: &EntityCode,
    gateway_accounts: Option<
        &std::collections::HashMap<ledger::Currency, gateway::service::PostingAccounts>,
    >,
) -> Result<AgentLineSettings, ConfigError> {
    let system = sync::agent_loop::system(line).unwrap_or("sage100");
    let k = |f: &str| format!("sync.{system}.{f}");
    if !agents.iter().any(|a| a.name == c.agent) {
        return Err(bad(
            &k("agent"),
            format!("{:?} is not an [[agents]] name", c.agent),
        ));
    }
    let division = match (&c.ar_division_no, line) {
        (Some(d), SageLine::BusinessWorks) if d.trim() != "00" => {
            return Err(bad(
                &k("ar_division_no"),
                "BusinessWorks has no divisions: leave it out (or \"00\")",
            ));
        }
        (Some(d), _) => d.trim().to_owned(),
        (None, SageLine::BusinessWorks) => "00".to_owned(),
        (None, _) => return Err(bad(&k("ar_division_no"), "is required (e.g. \"01\")")),
    };
    if division.len() != 2 || !division.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad(
            &k("ar_division_no"),
            "must be two letters or digits (\"01\")",
        ));
    }
    let code = c.currency.clone().unwrap_or_else(|| "USD".into());
    let currency =
        ledger::Currency::parse(&code).map_err(|e| bad(&k("currency"), e.to_string()))?;
    let ledger = super::q2c_ledger(&c.ledger, &k, default_entity, gateway_accounts)?;
    if !ledger.contains_key(&currency) {
        return Err(bad(
            &k("ledger"),
            format!(
                "has no accounts for the line's currency {code} ([sync.{system}.ledger.{code}])"
            ),
        ));
    }
    let max_rows = c.max_rows.unwrap_or(500);
    if max_rows == 0 {
        return Err(bad(&k("max_rows"), "must be at least 1"));
    }
    Ok(AgentLineSettings {
        config: sync::agent_loop::AgentLoopConfig {
            line,
            agent: c.agent.clone(),
            ar_division_no: division,
            currency,
            ledger,
            max_rows,
        },
        poll_interval_s: c.poll_interval_s.unwrap_or(300).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{SF, load, refused};

    const AGENT: &str = "[[agents]]\nname = \"s100\"\nkey_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
    const S100: &str = "[sync.sage100]\nagent = \"s100\"\nar_division_no = \"01\"\n[sync.sage100.ledger.USD]\nreceivable = \"1200\"\nrevenue = \"4000\"\ntax = \"2200\"\ncash = \"1010\"\n";
    const BW: &str = "[sync.businessworks]\nagent = \"s100\"\n[sync.businessworks.ledger.USD]\nreceivable = \"1200\"\nrevenue = \"4000\"\ntax = \"2200\"\ncash = \"1010\"\n";

    #[test]
    fn agent_lines_are_configured_and_checked() {
        let c = load(&format!("{AGENT}{SF}{S100}")).unwrap();
        let s = c.sync.sage100.as_ref().unwrap();
        assert_eq!(s.config.agent, "s100");
        assert_eq!(s.config.ar_division_no, "01");
        assert_eq!(s.config.currency.code(), "USD");
        assert_eq!((s.poll_interval_s, s.config.max_rows), (300, 500));
        assert!(c.sync.agent_line().is_some());
        let c = load(&format!("{AGENT}{SF}{BW}")).unwrap();
        let b = c.sync.businessworks.as_ref().unwrap();
        assert_eq!(b.config.ar_division_no, "00");
        assert_eq!(b.config.line, sync::objects::SageLine::BusinessWorks);

        refused(
            &format!("{AGENT}{S100}"),
            "sync.sage100",
            "needs [sync.salesforce]",
        );
        refused(
            &format!("{SF}{S100}"),
            "sync.sage100.agent",
            "not an [[agents]] name",
        );
        refused(
            &format!(
                "{AGENT}{SF}{}",
                S100.replace("ar_division_no = \"01\"\n", "")
            ),
            "sync.sage100.ar_division_no",
            "required",
        );
        refused(
            &format!("{AGENT}{SF}{}", S100.replace("\"01\"", "\"1\"")),
            "sync.sage100.ar_division_no",
            "two letters",
        );
        refused(
            &format!(
                "{AGENT}{SF}{}",
                S100.replace("ar_division_no", "currency = \"EUR\"\nar_division_no")
            ),
            "sync.sage100.ledger",
            "EUR",
        );
        refused(
            &format!(
                "{AGENT}{SF}{}",
                BW.replace("agent = ", "ar_division_no = \"01\"\nagent = ")
            ),
            "sync.businessworks.ar_division_no",
            "no divisions",
        );
        refused(
            &format!("{AGENT}{SF}{S100}{BW}"),
            "sync.businessworks",
            "one Sage line per installation",
        );
        let x3 = "[sync.x3]\nbase_url = \"https://x3.example.com:8124\"\nfolder = \"SEED\"\nsales_site = \"FR011\"\nshipping_site = \"FR012\"\nuser = \"cashloop\"\npassword = { env = \"PATH\" }\nbank = \"BNK01\"\n[sync.x3.ledger.EUR]\nreceivable = \"1200\"\nrevenue = \"4000\"\ntax = \"2200\"\ncash = \"1010\"\n";
        refused(
            &format!("{AGENT}{SF}{x3}{S100}"),
            "sync.sage100",
            "[sync.x3]",
        );
    }
}
