//! When a cached token is refreshed and when it may no longer be handed out. Pure arithmetic
//! on times, so it is tested without a server.

use std::time::{Duration, SystemTime};

/// When to refresh ahead of expiry.
///
/// With the defaults a token is refreshed once less than 20% of its lifetime remains, but never
/// with less than 10 s nor more than 5 minutes of margin, plus up to half the margin again at
/// random so that a fleet started together does not refresh together. Callers keep getting the
/// old token while the refresh runs; once a token is within `expiry_skew` of its expiry it is
/// never handed out, and callers wait for the new one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Refresh when less than this fraction of the lifetime remains (default 0.2).
    pub fraction: f64,
    /// The margin is at least this (default 10 s)...
    pub min_margin: Duration,
    /// ...and at most this (default 5 minutes). For very short tokens it is also at most half
    /// the lifetime, so a 10-second token is not refreshed the moment it arrives.
    pub max_margin: Duration,
    /// A random extra margin of up to this fraction of the margin (default 0.5).
    pub jitter: f64,
    /// A token this close to expiry is not handed out (default 5 s, at most a quarter of the
    /// lifetime): it could expire on its way to the resource server.
    pub expiry_skew: Duration,
    /// The lifetime assumed when the server did not send `expires_in` (default 60 s).
    pub default_lifetime: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            fraction: 0.2,
            min_margin: Duration::from_secs(10),
            max_margin: Duration::from_secs(300),
            jitter: 0.5,
            expiry_skew: Duration::from_secs(5),
            default_lifetime: Duration::from_secs(60),
        }
    }
}

/// The two moments that matter for one cached token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// From here on, a caller starts a background refresh and still gets this token.
    pub refresh_at: SystemTime,
    /// From here on, this token is not handed out.
    pub usable_until: SystemTime,
}

impl RefreshPolicy {
    /// The schedule of a token received at `received_at` that expires at `expires_at`;
    /// `random` is uniform in [0, 1) and decides the jitter.
    pub(crate) fn schedule(
        &self,
        received_at: SystemTime,
        expires_at: SystemTime,
        random: f64,
    ) -> Schedule {
        let lifetime = expires_at
            .duration_since(received_at)
            .unwrap_or(Duration::ZERO);
        let skew = self.expiry_skew.min(lifetime / 4);
        let margin = lifetime
            .mul_f64(self.fraction.clamp(0.0, 1.0))
            .clamp(self.min_margin, self.max_margin.max(self.min_margin))
            .min(lifetime / 2);
        let jitter = margin.mul_f64((self.jitter * random).clamp(0.0, 1.0));
        let usable_until = expires_at - skew;
        let refresh_at = (expires_at - margin - jitter).min(usable_until);
        Schedule {
            refresh_at: refresh_at.max(received_at),
            usable_until,
        }
    }

    /// When a token without `expires_in` received at `received_at` is taken to expire.
    pub(crate) fn assumed_expiry(&self, received_at: SystemTime) -> SystemTime {
        received_at + self.default_lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn offsets(lifetime: u64, random: f64) -> (u64, u64) {
        let t0 = at(1_000_000);
        let s = RefreshPolicy::default().schedule(t0, t0 + Duration::from_secs(lifetime), random);
        let secs = |t: SystemTime| t.duration_since(t0).unwrap().as_secs();
        (secs(s.refresh_at), secs(s.usable_until))
    }

    #[test]
    fn margin_is_a_fifth_of_the_lifetime_within_bounds() {
        // 15 minutes: 20% is 180 s.
        assert_eq!(offsets(900, 0.0), (720, 895));
        // One hour: 20% is 720 s, capped at 300 s.
        assert_eq!(offsets(3600, 0.0), (3300, 3595));
        // 30 s: 20% is 6 s, raised to 10 s; skew is a quarter at most (7 s → 5 s).
        assert_eq!(offsets(30, 0.0), (20, 25));
        // 8 s: the margin is at most half the lifetime, the skew at most a quarter.
        assert_eq!(offsets(8, 0.0), (4, 6));
    }

    #[test]
    fn jitter_adds_up_to_half_the_margin() {
        assert_eq!(offsets(900, 0.5).0, 720 - 45);
        assert_eq!(offsets(900, 0.999_999).0, 720 - 90);
    }

    #[test]
    fn a_token_already_expired_on_arrival_is_never_usable() {
        let t0 = at(1_000_000);
        let s = RefreshPolicy::default().schedule(t0, t0, 0.3);
        assert_eq!(s.usable_until, t0);
        assert_eq!(s.refresh_at, t0);
    }
}
