//! Overnight windows: `worker --window "0 22 * * *" --until 07:00`. The window opens at each
//! occurrence of a five-field crontab pattern (1-5 is Monday to Friday, 0 and 7 are Sunday) and
//! closes at the next `until` wall-clock time. Times are in the given time zone, safe across
//! daylight-saving changes: a start in the spring-forward gap opens at the first instant after
//! it (croner's rule), an `until` in the gap closes just after it, and one in the repeated hour
//! of autumn closes at its first pass. Pure: the time is an argument.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, NaiveTime, TimeZone};
use croner::Cron;

/// A parsed window.
#[derive(Debug, Clone)]
pub struct Window {
    pattern: String,
    cron: Cron,
    until: NaiveTime,
}

/// Where `now` stands against a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState<Tz: TimeZone> {
    Open { closes: DateTime<Tz> },
    Closed { opens: DateTime<Tz> },
}

impl Window {
    /// `pattern`: five crontab fields; `until`: `HH:MM`.
    pub fn parse(pattern: &str, until: &str) -> Result<Window, String> {
        let fields = pattern.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "--window {pattern:?}: a crontab pattern has five fields (minute hour day month weekday), not {fields}"
            ));
        }
        let cron: Cron = pattern
            .parse()
            .map_err(|e| format!("--window {pattern:?}: {e}"))?;
        let until = NaiveTime::parse_from_str(until, "%H:%M")
            .map_err(|_| format!("--until {until:?}: expected HH:MM (e.g. 07:00)"))?;
        Ok(Window {
            pattern: pattern.to_string(),
            cron,
            until,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Is the window open at `now`, and until when (or when does it open)?
    pub fn state<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> WindowState<Tz> {
        if let Ok(start) = self.cron.find_previous_occurrence(now, true) {
            let closes = self.close_after(&start);
            if *now < closes {
                return WindowState::Open { closes };
            }
        }
        let opens = self
            .cron
            .find_next_occurrence(now, false)
            .unwrap_or_else(|_| now.clone() + Duration::days(366));
        WindowState::Closed { opens }
    }

    /// The first `until` wall-clock time after `start`.
    fn close_after<Tz: TimeZone>(&self, start: &DateTime<Tz>) -> DateTime<Tz> {
        let tz = start.timezone();
        let mut day = start.naive_local().date();
        for _ in 0..3 {
            let at = NaiveDateTime::new(day, self.until);
            if let Some(t) = resolve(&tz, at) {
                if t > *start {
                    return t;
                }
            }
            day = day.succ_opt().unwrap_or(day);
        }
        start.clone() + Duration::days(1)
    }
}

/// The next `HH:MM` wall-clock time after `now` (`--by 07:00`): today's if it is still to
/// come, else tomorrow's; across a daylight-saving change as a window's `until` is.
pub fn next_clock_time<Tz: TimeZone>(
    now: &DateTime<Tz>,
    hhmm: &str,
) -> Result<DateTime<Tz>, String> {
    let at = NaiveTime::parse_from_str(hhmm, "%H:%M")
        .map_err(|_| format!("{hhmm:?}: expected HH:MM (e.g. 07:00)"))?;
    let tz = now.timezone();
    let mut day = now.naive_local().date();
    for _ in 0..3 {
        if let Some(t) = resolve(&tz, NaiveDateTime::new(day, at)) {
            if t > *now {
                return Ok(t);
            }
        }
        day = day.succ_opt().ok_or("the date is out of range")?;
    }
    Err(format!("{hhmm:?}: no such time in the next days"))
}

/// A wall-clock time as an instant: the first of two in a repeated hour; the first instant after
/// the gap for a time that does not exist.
fn resolve<Tz: TimeZone>(tz: &Tz, at: NaiveDateTime) -> Option<DateTime<Tz>> {
    match tz.from_local_datetime(&at) {
        LocalResult::Single(t) => Some(t),
        LocalResult::Ambiguous(first, _) => Some(first),
        LocalResult::None => (1..=180).find_map(|m| {
            tz.from_local_datetime(&(at + Duration::minutes(m)))
                .earliest()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;

    fn at<Tz: TimeZone>(tz: &Tz, s: &str) -> DateTime<Tz> {
        let ndt = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        tz.from_local_datetime(&ndt).earliest().unwrap()
    }

    fn local<Tz: TimeZone>(t: &DateTime<Tz>) -> String
    where
        Tz::Offset: std::fmt::Display,
    {
        t.format("%Y-%m-%d %H:%M %z").to_string()
    }

    #[test]
    fn a_deadline_by_a_clock_time_is_the_next_one() {
        let next =
            |now: &str, hhmm: &str| local(&next_clock_time(&at(&Berlin, now), hhmm).unwrap());
        assert_eq!(next("2026-06-10 23:30", "07:00"), "2026-06-11 07:00 +0200");
        assert_eq!(next("2026-06-10 05:00", "07:00"), "2026-06-10 07:00 +0200");
        // The very minute is past: tomorrow's.
        assert_eq!(next("2026-06-10 07:00", "07:00"), "2026-06-11 07:00 +0200");
        // Spring forward in Berlin (2026-03-29, 02:00 -> 03:00): 02:30 does not exist that
        // night; the deadline is the first instant after the gap.
        assert_eq!(next("2026-03-28 23:00", "02:30"), "2026-03-29 03:00 +0200");
        assert!(next_clock_time(&at(&Berlin, "2026-06-10 05:00"), "7am").is_err());
        assert!(next_clock_time(&at(&Berlin, "2026-06-10 05:00"), "25:00").is_err());
    }

    #[test]
    fn a_nightly_window_opens_at_22_and_closes_at_7() {
        let w = Window::parse("0 22 * * *", "07:00").unwrap();
        match w.state(&at(&Berlin, "2026-06-10 23:30")) {
            WindowState::Open { closes } => assert_eq!(local(&closes), "2026-06-11 07:00 +0200"),
            other => panic!("{other:?}"),
        }
        match w.state(&at(&Berlin, "2026-06-11 08:00")) {
            WindowState::Closed { opens } => assert_eq!(local(&opens), "2026-06-11 22:00 +0200"),
            other => panic!("{other:?}"),
        }
        // At the stroke of the start it is open.
        assert!(matches!(
            w.state(&at(&Berlin, "2026-06-11 22:00")),
            WindowState::Open { .. }
        ));
    }

    #[test]
    fn weekdays_are_crontab_weekdays() {
        // 1-5: Monday to Friday. 2026-11-27 is a Friday, 2026-11-28 a Saturday.
        let w = Window::parse("0 22 * * 1-5", "07:00").unwrap();
        assert!(matches!(
            w.state(&at(&Berlin, "2026-11-27 23:00")),
            WindowState::Open { .. }
        ));
        match w.state(&at(&Berlin, "2026-11-28 23:00")) {
            WindowState::Closed { opens } => assert_eq!(local(&opens), "2026-11-30 22:00 +0100"),
            other => panic!("{other:?}"),
        }
        // 0 and 7 are both Sunday (2026-11-29).
        for sunday in ["0 22 * * 0", "0 22 * * 7"] {
            let w = Window::parse(sunday, "07:00").unwrap();
            assert!(matches!(
                w.state(&at(&Berlin, "2026-11-29 23:00")),
                WindowState::Open { .. }
            ));
        }
    }

    #[test]
    fn windows_survive_daylight_saving_changes() {
        // Spring forward: in New York 2026-03-08 02:00 → 03:00. A window starting at 02:30
        // does not vanish: it opens right after the gap.
        let w = Window::parse("30 2 * * *", "06:00").unwrap();
        match w.state(&at(&New_York, "2026-03-08 03:10")) {
            WindowState::Open { closes } => assert_eq!(local(&closes), "2026-03-08 06:00 -0400"),
            other => panic!("spring-forward start skipped: {other:?}"),
        }
        // An overnight window across the spring change closes at 07:00 local, new offset.
        let night = Window::parse("0 22 * * *", "07:00").unwrap();
        match night.state(&at(&New_York, "2026-03-08 01:00")) {
            WindowState::Open { closes } => assert_eq!(local(&closes), "2026-03-08 07:00 -0400"),
            other => panic!("{other:?}"),
        }
        // Fall back: 2026-11-01 02:00 → 01:00; an until of 01:30 closes at its first pass.
        let w = Window::parse("0 22 * * *", "01:30").unwrap();
        match w.state(&at(&New_York, "2026-11-01 00:45")) {
            WindowState::Open { closes } => assert_eq!(local(&closes), "2026-11-01 01:30 -0400"),
            other => panic!("{other:?}"),
        }
        // An until inside the spring gap closes just after it.
        let w = Window::parse("0 22 * * *", "02:30").unwrap();
        match w.state(&at(&New_York, "2026-03-08 01:59")) {
            WindowState::Open { closes } => assert_eq!(local(&closes), "2026-03-08 03:00 -0400"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        assert!(Window::parse("0 0 22 * * *", "07:00")
            .unwrap_err()
            .contains("five fields"));
        assert!(Window::parse("0 25 * * *", "07:00").is_err());
        assert!(Window::parse("0 22 * * *", "7am")
            .unwrap_err()
            .contains("HH:MM"));
    }
}
