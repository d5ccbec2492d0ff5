//! Stop signals: CRI's `Signal` enum and image `STOPSIGNAL` strings to
//! signal numbers, and back for `ContainerStatus.stop_signal`.
//!
//! Real-time signals follow the user-space numbering glibc and Docker use
//! (`SIGRTMIN` = 34, `SIGRTMAX` = 64): the kernel's first two are reserved
//! by the C library, and an image that says `STOPSIGNAL SIGRTMIN+3` (systemd
//! in a container) means 37.

use berth_proto::cri;

/// First real-time signal as user space numbers it.
const RTMIN: i32 = 34;
/// Last real-time signal.
const RTMAX: i32 = 64;

/// The classic signals by name (without `SIG`), aliases included.
const NAMED: &[(&str, i32)] = &[
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("ALRM", libc::SIGALRM),
    ("BUS", libc::SIGBUS),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("PROF", libc::SIGPROF),
    ("PWR", libc::SIGPWR),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("STKFLT", libc::SIGSTKFLT),
    ("STOP", libc::SIGSTOP),
    ("SYS", libc::SIGSYS),
    ("TERM", libc::SIGTERM),
    ("TRAP", libc::SIGTRAP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("VTALRM", libc::SIGVTALRM),
    ("WINCH", libc::SIGWINCH),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// A signal name (`SIGTERM`, `term`, `SIGRTMIN+3`, `RTMAX-1`) or number to
/// its number; `None` for anything that is not a signal.
pub fn parse(name: &str) -> Option<i32> {
    let up = name.trim().to_ascii_uppercase();
    if let Ok(n) = up.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let n = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rest) = n.strip_prefix("RTMIN") {
        return rt_offset(rest, RTMIN, 1);
    }
    if let Some(rest) = n.strip_prefix("RTMAX") {
        return rt_offset(rest, RTMAX, -1);
    }
    NAMED.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

/// `""`, `+N` (after RTMIN) or `-N` (before RTMAX), staying in range.
fn rt_offset(rest: &str, base: i32, dir: i32) -> Option<i32> {
    let off = match rest {
        "" => 0,
        _ => {
            let digits = rest.strip_prefix(if dir > 0 { '+' } else { '-' })?;
            digits.parse::<i32>().ok()?
        }
    };
    let v = base + dir * off;
    (RTMIN..=RTMAX).contains(&v).then_some(v)
}

/// The number of a CRI `Signal`; `None` for RUNTIME_DEFAULT (the image's
/// STOPSIGNAL, else SIGTERM, applies) and unknown values.
pub fn from_cri(value: i32) -> Option<i32> {
    let s = cri::Signal::try_from(value).ok()?;
    if s == cri::Signal::RuntimeDefault {
        return None;
    }
    // Enum names spell offsets as PLUSn / MINUSn.
    let name = s.as_str_name().replace("PLUS", "+").replace("MINUS", "-");
    parse(&name)
}

/// The CRI `Signal` for a number, as ContainerStatus reports the stop signal
/// in effect. Aliases report their canonical name (SIGCHLD, SIGABRT, SIGIO).
pub fn to_cri(number: i32) -> cri::Signal {
    let name = match number {
        RTMIN => "SIGRTMIN".to_string(),
        RTMAX => "SIGRTMAX".to_string(),
        n if n > RTMIN && n <= RTMIN + 15 => format!("SIGRTMINPLUS{}", n - RTMIN),
        n if n > RTMIN + 15 && n < RTMAX => format!("SIGRTMAXMINUS{}", RTMAX - n),
        n => match NAMED
            .iter()
            .find(|(k, v)| *v == n && !matches!(*k, "IOT" | "CLD" | "POLL"))
        {
            Some((k, _)) => format!("SIG{k}"),
            None => return cri::Signal::RuntimeDefault,
        },
    };
    cri::Signal::from_str_name(&name).unwrap_or(cri::Signal::RuntimeDefault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_real_time_offsets() {
        assert_eq!(parse("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse("quit"), Some(libc::SIGQUIT));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("SIGCLD"), Some(libc::SIGCHLD));
        assert_eq!(parse("SIGIOT"), Some(libc::SIGABRT));
        assert_eq!(parse("SIGPOLL"), Some(libc::SIGIO));
        assert_eq!(parse("SIGRTMIN"), Some(34));
        assert_eq!(parse("SIGRTMIN+3"), Some(37));
        assert_eq!(parse("RTMAX-1"), Some(63));
        assert_eq!(parse("SIGRTMAX"), Some(64));
        for bad in [
            "SIGNOPE",
            "SIGRTMIN+31",
            "SIGRTMIN-1",
            "SIGRTMAX+1",
            "0",
            "65",
            "",
            "RTMIN+x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_cri_signal_maps_and_round_trips() {
        assert_eq!(from_cri(cri::Signal::RuntimeDefault as i32), None);
        assert_eq!(from_cri(cri::Signal::Sigrtminplus3 as i32), Some(37));
        assert_eq!(from_cri(cri::Signal::Sigrtmaxminus14 as i32), Some(50));
        assert_eq!(from_cri(cri::Signal::Sigcld as i32), Some(libc::SIGCHLD));
        assert_eq!(from_cri(999), None);
        for v in 1..=65 {
            let s = cri::Signal::try_from(v).unwrap();
            let n = from_cri(v).unwrap_or_else(|| panic!("{s:?} has no number"));
            let back = to_cri(n);
            // Aliases come back as their canonical name, same number.
            assert_eq!(from_cri(back as i32), Some(n), "{s:?} -> {n} -> {back:?}");
            if !matches!(
                s,
                cri::Signal::Sigcld | cri::Signal::Sigiot | cri::Signal::Sigpoll
            ) {
                assert_eq!(back, s, "{n}");
            }
        }
        assert_eq!(to_cri(0), cri::Signal::RuntimeDefault);
    }
}
