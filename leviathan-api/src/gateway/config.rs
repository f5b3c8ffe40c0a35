//! What the gateway is configured with: the upstreams and their keys (which only the server
//! holds), the price table and the budgets.

use std::{collections::BTreeMap, time::Duration};

use leviathan_core::{id::TargetId, secret::Secret};
use serde::{Deserialize, Serialize};

/// One upstream model server.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Base URL without a trailing slash: the gateway appends `/v1/messages` (Anthropic) or
    /// `/chat/completions` (OpenAI-compatible, whose base usually ends in `/v1`).
    pub base_url: String,
    /// The key sent upstream (`x-api-key` or `Authorization: Bearer`); none for servers
    /// without authentication.
    pub key: Option<Secret>,
}

impl Upstream {
    /// An upstream at `base_url` (a trailing slash is dropped).
    pub fn new(base_url: impl Into<String>, key: Option<Secret>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Self { base_url, key }
    }
}

/// The price of one model, in USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Per million input tokens.
    pub input_per_mtok: f64,
    /// Per million output tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of a call with these token counts.
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok) / 1_000_000.0
    }
}

/// Prices per model, dated; models it does not name cost [`PriceTable::fallback`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// The date the prices were taken (`YYYY-MM-DD`), recorded with every call's cost.
    pub as_of: String,
    /// Prices by model name; a name also matches the dated variants it prefixes
    /// (`claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`).
    pub models: BTreeMap<String, Price>,
    /// The price of a model the table does not name: the dearest listed, so that an unknown
    /// model cannot slip under a USD budget.
    pub fallback: Price,
}

impl PriceTable {
    /// The price of `model`: its own entry, else the longest entry it starts with, else the
    /// fallback.
    pub fn price(&self, model: &str) -> Price {
        if let Some(price) = self.models.get(model) {
            return *price;
        }
        self.models
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map_or(self.fallback, |(_, price)| *price)
    }

    /// Whether the table names `model` (or a prefix of it); metrics label other models `other`.
    pub fn knows(&self, model: &str) -> bool {
        self.models
            .keys()
            .any(|name| model.starts_with(name.as_str()))
    }
}

impl Default for PriceTable {
    /// The shipped prices (list prices of the providers' public pages on the date they say).
    fn default() -> Self {
        let price = |input_per_mtok, output_per_mtok| Price {
            input_per_mtok,
            output_per_mtok,
        };
        let models = [
            ("claude-opus-4-1", price(15.0, 75.0)),
            ("claude-sonnet-4-5", price(3.0, 15.0)),
            ("claude-haiku-4-5", price(1.0, 5.0)),
            ("gpt-5", price(1.25, 10.0)),
            ("gpt-5-mini", price(0.25, 2.0)),
            ("gpt-4.1", price(2.0, 8.0)),
        ];
        Self {
            as_of: "2025-10-15".to_owned(),
            models: models
                .into_iter()
                .map(|(name, price)| (name.to_owned(), price))
                .collect(),
            fallback: price(15.0, 75.0),
        }
    }
}

/// The most one scope may spend; `None` is no limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Model calls.
    #[serde(default)]
    pub calls: Option<u64>,
    /// Input plus output tokens.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Cost in USD.
    #[serde(default)]
    pub usd: Option<f64>,
}

/// The budgets the gateway holds calls to, before it forwards them.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Budgets {
    /// Per attempt.
    pub attempt: Limit,
    /// Per attempt, time since it was created: no call is forwarded after it.
    pub attempt_wall: Option<Duration>,
    /// Per target per UTC day, unless [`Budgets::targets`] names the target.
    pub target_day: Limit,
    /// Per UTC day for these targets (the target file's budget).
    pub targets: BTreeMap<TargetId, Limit>,
    /// All targets together per UTC day.
    pub global_day: Limit,
}

impl Budgets {
    /// The daily limit of `target`.
    pub fn target_limit(&self, target: &TargetId) -> &Limit {
        self.targets.get(target).unwrap_or(&self.target_day)
    }
}

/// The model gateway's configuration.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Where `POST /v1/gateway/anthropic/v1/messages` goes.
    pub anthropic: Option<Upstream>,
    /// Where `POST /v1/gateway/openai/v1/chat/completions` goes.
    pub openai: Option<Upstream>,
    /// Prices.
    pub prices: PriceTable,
    /// Budgets.
    pub budgets: Budgets,
    /// `max_tokens` given to an OpenAI-compatible call that sets none, so that its worst case
    /// is bounded.
    pub default_max_tokens: u64,
    /// Time limit of one upstream call.
    pub upstream_timeout: Duration,
}

impl GatewayConfig {
    /// A gateway to these upstreams with the shipped prices and no budgets.
    pub fn new(anthropic: Option<Upstream>, openai: Option<Upstream>) -> Self {
        Self {
            anthropic,
            openai,
            prices: PriceTable::default(),
            budgets: Budgets::default(),
            default_max_tokens: 8192,
            upstream_timeout: Duration::from_secs(600),
        }
    }

    /// Replaces the budgets.
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// Replaces the price table.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// The keys of the upstreams: the gateway redacts them from everything it records.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        [&self.anthropic, &self.openai]
            .into_iter()
            .flatten()
            .filter_map(|upstream| upstream.key.as_ref().map(Secret::expose))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_variants_take_their_family_price_and_unknown_models_the_dearest() {
        let table = PriceTable::default();
        assert_eq!(
            table.price("claude-sonnet-4-5-20250929").input_per_mtok,
            3.0
        );
        assert_eq!(table.price("gpt-5-mini").output_per_mtok, 2.0);
        assert_eq!(table.price("gpt-5-2025-08-07").output_per_mtok, 10.0);
        assert_eq!(table.price("some-local-model"), table.fallback);
        assert!(!table.knows("some-local-model"));
        let cost = table.price("claude-sonnet-4-5").cost(1_000_000, 100_000);
        assert!((cost - 4.5).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn debug_shows_no_upstream_key() {
        let config = GatewayConfig::new(
            Some(Upstream::new(
                "http://x/",
                Some(Secret::new("sk-ant-secret-1")),
            )),
            None,
        );
        assert_eq!(config.anthropic.as_ref().unwrap().base_url, "http://x");
        assert!(!format!("{config:?}").contains("sk-ant-secret-1"));
    }
}
