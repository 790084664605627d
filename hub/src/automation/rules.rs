//! The rules every marketing mail obeys, as pure functions of the time and the message log:
//! consent, the frequency cap, quiet hours; and the win-back selection.

use super::AutomationSettings;
use protocol::automation::{MessageKind, MessageRecord, Outcome};
use protocol::{CustomerId, CustomerRecord};
use std::collections::HashMap;
use std::time::Duration;
use time::{OffsetDateTime, Time, UtcOffset};

/// The checked form of [`AutomationSettings`]' rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Quiet hours as minutes after local midnight; `None`: none.
    pub quiet: Option<(u16, u16)>,
    pub offset: UtcOffset,
    pub cap: u32,
    pub cap_window: Duration,
}

/// `HH:MM` as minutes after midnight.
fn clock_time(text: &str) -> Result<u16, String> {
    let bad = || format!("'{text}' is not a time of day such as 21:00");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || text.trim().len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `+HH:MM`, `-HH:MM` or `Z`.
fn utc_offset(text: &str) -> Result<UtcOffset, String> {
    let text = text.trim();
    if text == "Z" {
        return Ok(UtcOffset::UTC);
    }
    let bad = || format!("'{text}' is not an offset from UTC such as +01:00 or -05:00");
    let (sign, rest) = match text.split_at_checked(1) {
        Some(("+", rest)) => (1i8, rest),
        Some(("-", rest)) => (-1i8, rest),
        _ => return Err(bad()),
    };
    let minutes = clock_time(rest).map_err(|_| bad())?;
    let (h, m) = ((minutes / 60) as i8, (minutes % 60) as i8);
    if h > 14 {
        return Err(bad());
    }
    UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|_| bad())
}

impl Rules {
    /// Checks the settings; `Err` says which key to fix.
    pub fn of(settings: &AutomationSettings) -> Result<Rules, String> {
        let start = clock_time(&settings.quiet_start).map_err(|e| format!("quiet_start: {e}"))?;
        let end = clock_time(&settings.quiet_end).map_err(|e| format!("quiet_end: {e}"))?;
        let offset = utc_offset(&settings.utc_offset).map_err(|e| format!("utc_offset: {e}"))?;
        if settings.abandoned_after.is_zero() {
            return Err("abandoned_after must be more than 0".into());
        }
        if settings.link_valid_for.is_zero() {
            return Err("link_valid_for must be more than 0".into());
        }
        if settings.win_back_after_days == 0 || settings.win_back_batch == 0 {
            return Err("win_back_after_days and win_back_batch must be more than 0".into());
        }
        Ok(Rules {
            quiet: (start != end).then_some((start, end)),
            offset,
            cap: settings.frequency_cap,
            cap_window: settings.cap_window,
        })
    }

    /// When `now` falls in quiet hours, their end (the next local `quiet_end`); else `None`.
    pub fn quiet_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let (start, end) = self.quiet?;
        let local = now.to_offset(self.offset);
        let minute = u16::from(local.hour()) * 60 + u16::from(local.minute());
        let quiet = if start < end {
            start <= minute && minute < end
        } else {
            minute >= start || minute < end
        };
        if !quiet {
            return None;
        }
        let end_time = Time::from_hms((end / 60) as u8, (end % 60) as u8, 0).ok()?;
        let mut date = local.date();
        if minute >= end {
            date = date.next_day()?;
        }
        Some(
            date.with_time(end_time)
                .assume_offset(self.offset)
                .to_offset(UtcOffset::UTC),
        )
    }

    /// Whether the customer already had as many marketing mails as the cap allows in the window
    /// before `now`. `history` is the customer's log (any order).
    pub fn capped(&self, history: &[MessageRecord], now: OffsetDateTime) -> bool {
        if self.cap == 0 {
            return false;
        }
        let since = now - self.cap_window;
        let sent = history
            .iter()
            .filter(|r| r.outcome == Outcome::Sent && r.at > since && r.at <= now)
            .count();
        sent >= self.cap as usize
    }
}

/// Consent to marketing email: the customer explicitly granted email + marketing (at
/// registration, on the account page or through the API) and has not withdrawn it since (an
/// unsubscribe link withdraws it). No record is no consent.
pub fn may_email_marketing(customer: &CustomerRecord) -> bool {
    customer.consents.granted(
        protocol::ConsentChannel::Email,
        protocol::ConsentPurpose::Marketing,
    )
}

/// Customers whose last order is older than `after_days` before `now`, and who had no win-back
/// mail (and no consent refusal of one) in the last `every_days`: the win-back selection.
/// `last_orders` maps each customer to their latest order's time; `history` answers a
/// customer's log.
pub fn win_back_candidates(
    last_orders: &HashMap<CustomerId, OffsetDateTime>,
    now: OffsetDateTime,
    after_days: u32,
    every_days: u32,
    history: impl Fn(CustomerId) -> Vec<MessageRecord>,
) -> Vec<CustomerId> {
    let lapsed_before = now - time::Duration::days(i64::from(after_days));
    let recent = now - time::Duration::days(i64::from(every_days));
    let mut out: Vec<(OffsetDateTime, CustomerId)> = last_orders
        .iter()
        .filter(|(_, last)| **last < lapsed_before)
        .map(|(c, last)| (*last, *c))
        .collect();
    out.sort();
    out.into_iter()
        .map(|(_, c)| c)
        .filter(|c| {
            !history(*c).iter().any(|r| {
                r.kind == MessageKind::WinBack
                    && r.at > recent
                    && (r.outcome == Outcome::Sent
                        || r.reason == protocol::automation::Reason::NoConsent)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::automation::Reason;
    use time::macros::datetime;

    fn rules() -> Rules {
        Rules::of(&AutomationSettings::default()).expect("defaults are valid")
    }

    fn record(
        customer: CustomerId,
        kind: MessageKind,
        at: OffsetDateTime,
        outcome: Outcome,
        reason: Reason,
    ) -> MessageRecord {
        MessageRecord {
            id: ulid::Ulid::new(),
            at,
            customer,
            kind,
            outcome,
            reason,
            subject: String::new(),
            timer: None,
            email_key: None,
            deferred_to: None,
            basket_version: None,
        }
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_the_local_offset() {
        let r = rules(); // 21:00–08:00 at +01:00
        let cases = [
            (datetime!(2026-03-02 12:00 UTC), None),
            (datetime!(2026-03-02 19:59 UTC), None), // 20:59 local
            (
                datetime!(2026-03-02 20:00 UTC),
                Some(datetime!(2026-03-03 07:00 UTC)),
            ), // 21:00
            (
                datetime!(2026-03-02 23:30 UTC),
                Some(datetime!(2026-03-03 07:00 UTC)),
            ),
            (
                datetime!(2026-03-03 03:00 UTC),
                Some(datetime!(2026-03-03 07:00 UTC)),
            ),
            (
                datetime!(2026-03-03 06:59 UTC),
                Some(datetime!(2026-03-03 07:00 UTC)),
            ),
            (datetime!(2026-03-03 07:00 UTC), None), // 08:00 local
        ];
        for (now, expected) in cases {
            assert_eq!(r.quiet_until(now), expected, "at {now}");
        }
        let daytime = Rules {
            quiet: Some((12 * 60, 14 * 60)),
            offset: UtcOffset::UTC,
            ..r
        };
        assert_eq!(
            daytime.quiet_until(datetime!(2026-03-02 13:00 UTC)),
            Some(datetime!(2026-03-02 14:00 UTC))
        );
        assert_eq!(daytime.quiet_until(datetime!(2026-03-02 14:00 UTC)), None);
        assert_eq!(
            Rules { quiet: None, ..r }.quiet_until(datetime!(2026-03-02 23:00 UTC)),
            None
        );
    }

    #[test]
    fn settings_with_bad_times_are_refused_with_the_key_to_fix() {
        let bad = |f: fn(&mut AutomationSettings)| {
            let mut s = AutomationSettings::default();
            f(&mut s);
            Rules::of(&s).expect_err("refused")
        };
        assert!(bad(|s| s.quiet_start = "25:00".into()).starts_with("quiet_start"));
        assert!(bad(|s| s.quiet_end = "8".into()).starts_with("quiet_end"));
        assert!(bad(|s| s.utc_offset = "CET".into()).starts_with("utc_offset"));
        assert!(bad(|s| s.abandoned_after = Duration::ZERO).contains("abandoned_after"));
        let mut s = AutomationSettings {
            utc_offset: "-05:30".into(),
            ..AutomationSettings::default()
        };
        assert_eq!(Rules::of(&s).expect("valid").offset.whole_minutes(), -330);
        s.quiet_start = "08:00".into();
        assert_eq!(Rules::of(&s).expect("valid").quiet, None);
    }

    #[test]
    fn the_cap_counts_sent_mail_in_the_window_only() {
        let r = rules();
        let c = CustomerId::new();
        let now = datetime!(2026-03-02 12:00 UTC);
        let sent = |at| {
            record(
                c,
                MessageKind::BackInStock,
                at,
                Outcome::Sent,
                Reason::Allowed,
            )
        };
        assert!(!r.capped(&[], now));
        assert!(r.capped(&[sent(now - time::Duration::hours(23))], now));
        assert!(!r.capped(&[sent(now - time::Duration::hours(25))], now));
        let suppressed = record(
            c,
            MessageKind::WinBack,
            now,
            Outcome::Suppressed,
            Reason::FrequencyCap,
        );
        assert!(!r.capped(&[suppressed], now));
        let two = Rules { cap: 2, ..r };
        assert!(!two.capped(&[sent(now - time::Duration::hours(1))], now));
        assert!(!Rules { cap: 0, ..r }.capped(&[sent(now)], now));
    }

    #[test]
    fn win_back_picks_lapsed_customers_not_mailed_recently() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let days = |d: i64| now - time::Duration::days(d);
        let (lapsed, recent_buyer, mailed, mailed_long_ago, refused) = (
            CustomerId::new(),
            CustomerId::new(),
            CustomerId::new(),
            CustomerId::new(),
            CustomerId::new(),
        );
        let last_orders = HashMap::from([
            (lapsed, days(61)),
            (recent_buyer, days(59)),
            (mailed, days(200)),
            (mailed_long_ago, days(300)),
            (refused, days(100)),
        ]);
        let history = |c: CustomerId| {
            if c == mailed {
                vec![record(
                    c,
                    MessageKind::WinBack,
                    days(30),
                    Outcome::Sent,
                    Reason::Allowed,
                )]
            } else if c == mailed_long_ago {
                vec![record(
                    c,
                    MessageKind::WinBack,
                    days(120),
                    Outcome::Sent,
                    Reason::Allowed,
                )]
            } else if c == refused {
                vec![record(
                    c,
                    MessageKind::WinBack,
                    days(1),
                    Outcome::Suppressed,
                    Reason::NoConsent,
                )]
            } else {
                vec![record(
                    c,
                    MessageKind::AbandonedBasket,
                    days(1),
                    Outcome::Sent,
                    Reason::Allowed,
                )]
            }
        };
        let picked = win_back_candidates(&last_orders, now, 60, 90, history);
        // Oldest last order first.
        assert_eq!(picked, vec![mailed_long_ago, lapsed]);
    }
}
