use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use oci_spec::runtime::{Hook, HookBuilder, HooksBuilder, Spec};

use super::*;
use crate::init::hooks::run_blocking;

fn hook(script: &str, timeout: Option<i64>) -> Hook {
    let mut b = HookBuilder::default()
        .path("/bin/sh")
        .args(vec!["sh".into(), "-c".into(), script.into(), "the-moment".into()])
        .env(vec!["ONLY=this one".into()]);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().unwrap()
}

fn state() -> State {
    State {
        oci_version: "1.2.0".into(),
        id: "c1".into(),
        status: String::new(),
        pid: 0,
        bundle: "/run/berth/c1".into(),
        annotations: [("a".to_string(), "b".to_string())].into(),
    }
}

/// The hook reads the state (with this moment's status and pid) on
/// stdin, gets its args as written and only its own env.
#[test]
fn a_hook_gets_the_state_on_stdin_its_args_and_only_its_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "{{ echo \"$0|$ONLY|$(env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort | tr '\\n' ' ')\"; cat; }} >{}",
        out.display()
    );
    run_blocking(Moment::CreateContainer, &[hook(&script, None)], &state(), 42).unwrap();
    let got = std::fs::read_to_string(&out).unwrap();
    let (line, json) = got.split_once('\n').unwrap();
    assert_eq!(line, "the-moment|this one|ONLY=this one ");
    let s: State = serde_json::from_str(json).unwrap();
    assert_eq!((s.status.as_str(), s.pid, s.id.as_str()), ("creating", 42, "c1"));
    assert_eq!(s.annotations["a"], "b");
}

/// A failing hook is an error naming the moment, the hook and its exit,
/// quoting its output; the hooks after it do not run.
#[test]
fn a_failing_hook_names_moment_hook_and_exit_and_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let after = dir.path().join("after");
    let hooks = [
        hook("true", None),
        hook("echo no-way >&2; exit 3", None),
        hook(&format!("touch {}", after.display()), None),
    ];
    let e = run_blocking(Moment::StartContainer, &hooks, &state(), 1).unwrap_err();
    assert_eq!(e, "startContainer hook #2 (/bin/sh): exit status 3: no-way");
    assert!(!after.exists(), "a hook after the failed one ran");
}

/// A hook past its timeout is killed (and reaped), not waited for.
#[test]
fn a_hook_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let h = hook(
        &format!("echo $$ >{}; exec sleep 600", pidfile.display()),
        Some(1),
    );
    let e = run_blocking(Moment::CreateContainer, &[h], &state(), 1).unwrap_err();
    assert!(
        e.contains("createContainer hook #1") && e.contains("timed out after 1s"),
        "{e}"
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the hook still exists"
    );
}

/// A descriptor the caller holds without close-on-exec does not reach
/// the hook: only its stdio (and what `ls` opens itself).
#[test]
fn a_hook_inherits_no_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let leaky: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let raw = leaky.as_raw_fd();
    nix::fcntl::fcntl(&leaky, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let out = dir.path().join("fds");
    let h = hook(&format!("ls /proc/self/fd >{}", out.display()), None);
    run_blocking(Moment::CreateContainer, &[h], &state(), 1).unwrap();
    let fds = std::fs::read_to_string(&out).unwrap();
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "fd {raw} was open in the caller");
}

/// A relative hook path never runs (berthd refuses it too).
#[test]
fn a_relative_hook_path_is_refused() {
    let h = HookBuilder::default().path("bin/true").build().unwrap();
    let e = run_blocking(Moment::CreateContainer, &[h], &state(), 1).unwrap_err();
    assert!(e.contains("is not absolute"), "{e}");
}

/// prestart runs with createRuntime, first; a spec without hooks carries
/// no state (init and the shim then skip every hook step).
#[test]
fn moments_pick_their_hooks_and_no_hooks_means_no_state() {
    let mut spec = Spec::default();
    assert!(State::for_spec(&spec, "c1", "/b").is_none());
    #[allow(deprecated)]
    let hooks = HooksBuilder::default()
        .prestart(vec![hook("prestart", None)])
        .create_runtime(vec![hook("runtime", None)])
        .poststop(vec![hook("stop", None)])
        .build()
        .unwrap();
    spec.set_hooks(Some(hooks));
    let scripts = |m: Moment| -> Vec<String> {
        m.hooks(&spec)
            .iter()
            .map(|h| h.args().as_ref().unwrap()[2].clone())
            .collect()
    };
    assert_eq!(scripts(Moment::CreateRuntime), ["prestart", "runtime"]);
    assert_eq!(scripts(Moment::Poststop), ["stop"]);
    assert!(scripts(Moment::StartContainer).is_empty());
    let s = State::for_spec(&spec, "c1", "/b").unwrap();
    assert_eq!((s.id.as_str(), s.bundle.as_str()), ("c1", "/b"));
}

/// The createRuntime round trip: init asks, the shim answers on the start
/// pipe and then reads on to the ready report.
#[test]
fn init_asks_and_the_shim_reads_on_to_ready() {
    let (r, w) = std::io::pipe().unwrap();
    let mut w = w;
    w.write_all(b"HR").unwrap();
    drop(w);
    let mut r = File::from(OwnedFd::from(r));
    assert_eq!(
        crate::sync::read_until(&mut r, &[crate::sync::READY, ASK]).unwrap(),
        ASK
    );
    assert_eq!(crate::sync::read(&mut r, true).unwrap(), crate::sync::READY);
}
