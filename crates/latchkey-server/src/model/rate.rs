//! Rates and quotas: how many of something per period.

use std::time::Duration;

/// A rate: at most `count` events in a burst, refilled at `count` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per period (and the burst).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/min`, `N/hour` or `N/day` (N from 1).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected N/min, N/hour, N/day or N/s"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{text:?}: the count must be a whole number from 1"))?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            other => return Err(format!("{other:?}: the period must be s, min, hour or day")),
        };
        Ok(Rate {
            count,
            period: Duration::from_secs(seconds),
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "hour",
            86_400 => "day",
            other => return write!(f, "{}/{other}s", self.count),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// What happens when a client passes its token rate or quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaMode {
    /// The request is refused (429).
    #[default]
    Enforce,
    /// The request succeeds; the overrun is logged, counted and audited.
    Monitor,
}

impl QuotaMode {
    /// `enforce` or `monitor`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaMode::Enforce => "enforce",
            QuotaMode::Monitor => "monitor",
        }
    }

    /// The mode named `name`.
    pub fn parse(name: &str) -> Result<QuotaMode, String> {
        match name {
            "enforce" => Ok(QuotaMode::Enforce),
            "monitor" => Ok(QuotaMode::Monitor),
            other => Err(format!("{other:?}: the quota mode is enforce or monitor")),
        }
    }
}

/// A client's token limits, as set when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenLimits {
    /// The token rate (a token bucket).
    pub rate: Option<Rate>,
    /// The token quota per fixed window.
    pub quota: Option<Rate>,
    /// Enforce or monitor.
    pub mode: QuotaMode,
}
