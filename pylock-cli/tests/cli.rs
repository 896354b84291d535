//! The `pylock` command against real servers: runs never overlap, a paused holder has its
//! command stopped and exits with the lost-lock code while another process takes the lock,
//! renewal keeps a lock for several TTLs, the hold bound ends a stuck holder, a stop signal
//! or a timeout while waiting never starts the command and leaves nothing behind (a fair
//! waiter's place goes at once), and the exit codes and messages are what the docs say.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use pylock_tests::{Kind, Needs, TestServer};
use tokio::process::{Child, Command};

const LOST: i32 = 76;
const TIMEOUT: i32 = 75;
const USAGE: i32 = 64;

fn pylock(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pylock"));
    command
        .env_remove("PYLOCK_URL")
        .arg("--url")
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn output(command: &mut Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("pylock finished within a minute")
        .expect("run pylock")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pylock-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

fn alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `pylock release --force key` says it released the lock, and the `holder` run finds out at
/// its next renewal: it stops its command and exits with the lost-lock code.
async fn forced_release_stops_the_holder(url: &str, key: &str, holder: &mut Child) {
    let forced = output(pylock(url).args(["release", "--force", key])).await;
    assert!(
        text(&forced).contains("released (forced)"),
        "{}",
        text(&forced)
    );
    let holder_exit = tokio::time::timeout(Duration::from_secs(30), holder.wait())
        .await
        .expect("the holder notices")
        .expect("wait");
    assert_eq!(holder_exit.code(), Some(LOST));
}

async fn redis() -> Option<TestServer> {
    TestServer::start(Kind::Redis, Needs::any()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_one_key_never_overlap() {
    for kind in [Kind::Redis, Kind::Memcached, Kind::Etcd] {
        let Some(server) = TestServer::start(kind, Needs::any()).await else {
            return;
        };
        let dir = scratch(&format!("overlap-{kind:?}"));
        let marks = dir.join("marks");
        let key = format!("overlap-{}-{kind:?}", std::process::id());
        // Each run appends start and end marks around a pause; overlapping runs interleave.
        let script = format!(
            "echo start $$ >> {0}; sleep 0.2; echo end $$ >> {0}",
            marks.display()
        );
        let mut runs: Vec<Child> = (0..4)
            .map(|_| {
                pylock(server.url())
                    .args([
                        "-q",
                        "run",
                        "--expires",
                        "5",
                        &key,
                        "--",
                        "sh",
                        "-c",
                        &script,
                    ])
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for run in &mut runs {
            let status = run.wait().await.expect("wait");
            assert!(status.success(), "{status}");
        }
        let marks = std::fs::read_to_string(&marks).expect("marks");
        let lines: Vec<&str> = marks.lines().collect();
        assert_eq!(lines.len(), 8, "{marks}");
        for pair in lines.chunks(2) {
            let (start, end) = (pair[0], pair[1]);
            assert!(
                start.starts_with("start") && end.starts_with("end") && start[6..] == end[4..],
                "runs overlapped on {kind:?}:\n{marks}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_has_its_command_stopped_and_another_takes_the_lock() {
    let Some(server) = redis().await else {
        return;
    };
    let dir = scratch("paused");
    let child_pid = dir.join("child.pid");
    let key = format!("paused-{}", std::process::id());
    let script = format!("echo $$ > {}; exec sleep 60", child_pid.display());
    let holder = pylock(server.url())
        .args([
            "run",
            "--expires",
            "1",
            "--grace",
            "2",
            &key,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let command_pid = wait_for_file(&child_pid).await;

    // The holder process stalls past its TTL; its renewals stop.
    let holder_pid = holder.id().expect("holder pid");
    signal(holder_pid, "-STOP");
    let other =
        output(pylock(server.url()).args(["-q", "run", "--timeout", "20", &key, "--", "true"]))
            .await;
    assert!(
        other.status.success(),
        "the other process: {}",
        text(&other)
    );

    // It wakes up, finds the lock lost, stops its command, and says so.
    signal(holder_pid, "-CONT");
    let finished = tokio::time::timeout(Duration::from_secs(20), holder.wait_with_output())
        .await
        .expect("the holder exits after it wakes")
        .expect("wait");
    assert_eq!(finished.status.code(), Some(LOST), "{}", text(&finished));
    assert!(
        text(&finished).contains("lost the lock"),
        "{}",
        text(&finished)
    );
    assert!(
        !alive(&command_pid),
        "the command still runs without the lock"
    );
}

/// `pylock status` and `pylock release --force` on etcd: the holder's fence is shown, a
/// forced release frees the lock, and the holder's run stops with the lost-lock code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_commands_on_etcd() {
    let Some(server) = TestServer::start(Kind::Etcd, Needs::any()).await else {
        return;
    };
    let key = format!("etcd-ops-{}", std::process::id());
    let mut holder = pylock(server.url())
        .args(["-q", "run", "--expires", "3", &key, "--", "sleep", "60"])
        .spawn()
        .expect("spawn");
    let mut shown = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = text(&output(pylock(server.url()).args(["status", &key])).await);
        if shown.contains("held") {
            break;
        }
    }
    assert!(
        shown.contains("held, expires in") && shown.contains("fence"),
        "{shown}"
    );
    forced_release_stops_the_holder(server.url(), &key, &mut holder).await;
    let after = text(&output(pylock(server.url()).args(["status", &key])).await);
    assert!(after.contains("free"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_the_lock_for_several_ttls() {
    let Some(server) = redis().await else {
        return;
    };
    let key = format!("renewed-{}", std::process::id());
    let mut holder = pylock(server.url())
        .args(["-q", "run", "--expires", "1", &key, "--", "sleep", "4"])
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let status = output(pylock(server.url()).args(["status", &key])).await;
        assert!(text(&status).contains("held"), "{}", text(&status));
        let other =
            output(pylock(server.url()).args(["-q", "run", "--timeout", "0", &key, "--", "true"]))
                .await;
        assert_eq!(other.status.code(), Some(TIMEOUT), "{}", text(&other));
    }
    assert!(holder.wait().await.expect("wait").success());
    let status = output(pylock(server.url()).args(["status", &key])).await;
    assert!(
        text(&status).contains("free"),
        "released at the end: {}",
        text(&status)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_bound_ends_a_stuck_holder() {
    let Some(server) = redis().await else {
        return;
    };
    let key = format!("stuck-{}", std::process::id());
    let started = Instant::now();
    let stuck = output(pylock(server.url()).args([
        "run",
        "--expires",
        "1",
        "--max-hold",
        "2",
        "--grace",
        "1",
        &key,
        "--",
        "sleep",
        "60",
    ]))
    .await;
    let took = started.elapsed();
    assert_eq!(stuck.status.code(), Some(LOST), "{}", text(&stuck));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "the bound of 2 s ended the hold after {took:?}"
    );
    let status = output(pylock(server.url()).args(["status", &key])).await;
    assert!(text(&status).contains("free"), "{}", text(&status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_messages_and_operator_commands() {
    let Some(server) = redis().await else {
        return;
    };
    let key = format!("codes-{}", std::process::id());

    // The command's own exit code, and its fence in the environment.
    let run = output(pylock(server.url()).args([
        "run",
        &key,
        "--",
        "sh",
        "-c",
        "test -n \"$PYLOCK_FENCE\" && exit 7",
    ]))
    .await;
    assert_eq!(run.status.code(), Some(7), "{}", text(&run));

    // While it is held: waiting is announced on stderr, -q hides it, the timeout has its code.
    let mut holder = pylock(server.url())
        .args(["-q", "run", "--expires", "30", &key, "--", "sleep", "30"])
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waited =
        output(pylock(server.url()).args(["run", "--timeout", "0.3", &key, "--", "true"])).await;
    assert_eq!(waited.status.code(), Some(TIMEOUT));
    let said = String::from_utf8_lossy(&waited.stderr);
    assert!(said.contains("waiting up to 0.3 s"), "{said}");
    assert_eq!(said.lines().count(), 2, "one line per event: {said}");
    let quiet =
        output(pylock(server.url()).args(["-q", "run", "--timeout", "0.3", &key, "--", "true"]))
            .await;
    assert_eq!(quiet.status.code(), Some(TIMEOUT));
    // Like `flock -n`: a quiet overlap says nothing at all.
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "",
        "-q on a held lock"
    );
    // A fair run waits in line like any other.
    let fair = output(pylock(server.url()).args(["run", "--fair", "-n", &key, "--", "true"])).await;
    assert_eq!(fair.status.code(), Some(TIMEOUT), "{}", text(&fair));
    // flock's own spelling: -n (one attempt) and -E (the conflict's exit code).
    let flock_like =
        output(pylock(server.url()).args(["run", "-n", "-E", "3", &key, "--", "true"])).await;
    assert_eq!(flock_like.status.code(), Some(3), "{}", text(&flock_like));
    assert_eq!(
        text(&flock_like).lines().count(),
        1,
        "{}",
        text(&flock_like)
    );
    let flock_quiet = output(
        pylock(server.url()).args(["-q", "run", "-w", "0.2", "-E", "3", &key, "--", "true"]),
    )
    .await;
    assert_eq!(flock_quiet.status.code(), Some(3), "{}", text(&flock_quiet));
    assert!(flock_quiet.stderr.is_empty(), "{}", text(&flock_quiet));

    let status = output(pylock(server.url()).args(["status", &key])).await;
    let status = text(&status);
    assert!(
        status.contains("held, expires in") && status.contains("fence"),
        "{status}"
    );

    let refused = output(pylock(server.url()).args(["release", &key])).await;
    assert_eq!(refused.status.code(), Some(USAGE), "{}", text(&refused));
    forced_release_stops_the_holder(server.url(), &key, &mut holder).await;

    // No server at all: one clear line, the usage code.
    let mut bare = Command::new(env!("CARGO_BIN_EXE_pylock"));
    bare.env_remove("PYLOCK_URL")
        .args(["run", "k", "--", "true"]);
    let bare = output(&mut bare).await;
    assert_eq!(bare.status.code(), Some(USAGE));
    let said = String::from_utf8_lossy(&bare.stderr);
    assert!(
        said.contains("give --url") && said.lines().count() == 1,
        "{said}"
    );

    // An unreachable server: retried within the timeout (said once), then one line, no
    // backtrace.
    let down = output(pylock("redis://127.0.0.1:1?connect_timeout=200ms").args([
        "run",
        "--timeout",
        "1",
        &key,
        "--",
        "true",
    ]))
    .await;
    assert_eq!(down.status.code(), Some(70), "{}", text(&down));
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(
        said.contains("unavailable")
            && said.lines().count() == 2
            && said.lines().all(|line| line.starts_with("pylock: ")),
        "{said}"
    );
}

/// Whether `pid` runs (a zombie, dead but not yet reaped, does not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Waits up to `limit` for every pid to stop running; the ones still running.
async fn still_running(pids: &[String], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<String> = pids.iter().filter(|p| running(p)).cloned().collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A job of a shell and a grandchild that write their pids, then sleep a long time.
fn job_with_grandchild(dir: &Path) -> String {
    format!(
        "echo $$ > {0}/child.pid; sh -c 'echo $$ > {0}/grandchild.pid; sleep 60'; sleep 60",
        dir.display()
    )
}

async fn job_pids(dir: &Path) -> Vec<String> {
    vec![
        wait_for_file(&dir.join("child.pid")).await,
        wait_for_file(&dir.join("grandchild.pid")).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_and_its_grandchildren_die_with_pylock_however_it_dies() {
    let Some(server) = redis().await else {
        return;
    };
    for (how, expected_exit) in [("-KILL", None), ("-HUP", Some(129)), ("-QUIT", Some(131))] {
        let dir = scratch(&format!("dies{how}"));
        let key = format!("dies{how}-{}", std::process::id());
        let mut holder = pylock(server.url())
            .args(["-q", "run", "--expires", "30", &key, "--", "sh", "-c"])
            .arg(job_with_grandchild(&dir))
            .spawn()
            .expect("spawn");
        let pids = job_pids(&dir).await;
        signal(holder.id().expect("pid"), how);
        let status = tokio::time::timeout(Duration::from_secs(20), holder.wait())
            .await
            .expect("pylock ends")
            .expect("wait");
        let left = still_running(&pids, Duration::from_secs(5)).await;
        assert!(
            left.is_empty(),
            "after kill {how} of pylock, {left:?} still run unprotected"
        );
        if let Some(code) = expected_exit {
            // A catchable signal is passed on to the job, and the lock is released after it.
            assert_eq!(status.code(), Some(code), "{how}");
            let status = output(pylock(server.url()).args(["status", &key])).await;
            assert!(text(&status).contains("free"), "{how}: {}", text(&status));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_stops_the_whole_job_not_just_its_first_process() {
    let Some(server) = redis().await else {
        return;
    };
    let dir = scratch("lost-group");
    let key = format!("lost-group-{}", std::process::id());
    let mut holder = pylock(server.url())
        .args([
            "-q",
            "run",
            "--expires",
            "1",
            "--max-hold",
            "1.5",
            "--grace",
            "1",
            &key,
        ])
        .args(["--", "sh", "-c"])
        .arg(job_with_grandchild(&dir))
        .spawn()
        .expect("spawn");
    let pids = job_pids(&dir).await;
    let status = tokio::time::timeout(Duration::from_secs(20), holder.wait())
        .await
        .expect("pylock ends")
        .expect("wait");
    assert_eq!(status.code(), Some(LOST));
    // pylock returns only once the group is gone.
    let left = still_running(&pids, Duration::ZERO).await;
    assert!(left.is_empty(), "{left:?} outlived the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_left_behind_are_stopped_before_the_lock_is_released() {
    let Some(server) = redis().await else {
        return;
    };
    let dir = scratch("left-behind");
    let key = format!("left-behind-{}", std::process::id());
    let script = format!(
        "sh -c 'echo $$ > {}/grandchild.pid; exec sleep 60' & sleep 0.3",
        dir.display()
    );
    let run = output(
        pylock(server.url())
            .args(["run", "--grace", "1", &key, "--", "sh", "-c"])
            .arg(script),
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(
        text(&run).contains("left processes behind"),
        "{}",
        text(&run)
    );
    let grandchild = wait_for_file(&dir.join("grandchild.pid")).await;
    assert!(
        !running(&grandchild),
        "the background process outlived the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_releases_the_lock_at_once() {
    let Some(server) = redis().await else {
        return;
    };
    let key = format!("cannot-start-{}", std::process::id());
    let not_executable = scratch("cannot-start").join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
    let not_executable = not_executable.display().to_string();
    for (command, code) in [
        ("/nonexistent/command", 127),
        (not_executable.as_str(), 126),
    ] {
        let run =
            output(pylock(server.url()).args(["run", "--expires", "60", &key, "--", command]))
                .await;
        assert_eq!(run.status.code(), Some(code), "{}", text(&run));
        assert!(text(&run).contains("cannot run"), "{}", text(&run));
        let status = output(pylock(server.url()).args(["status", &key])).await;
        assert!(
            text(&status).contains("free"),
            "{command}: {}",
            text(&status)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_briefly_unreachable_server_is_retried_within_the_timeout() {
    let Some(mut server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let key = format!("outage-{}", std::process::id());
    server.stop().await;
    let run = pylock(server.url())
        .args(["run", "--timeout", "30", &key, "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_again().await;
    let run = tokio::time::timeout(Duration::from_secs(40), run.wait_with_output())
        .await
        .expect("pylock ends")
        .expect("wait");
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(text(&run).contains("retrying"), "{}", text(&run));
}

/// `--timeout inf` waits as long as it takes, like `flock` without `-w`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_timeout_waits_for_the_holder() {
    let Some(server) = redis().await else {
        return;
    };
    let key = format!("inf-{}", std::process::id());
    let mut holder = pylock(server.url())
        .args(["-q", "run", &key, "--", "sleep", "1.5"])
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiter = pylock(server.url())
        .args(["run", "--timeout", "inf", &key, "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let waiter = tokio::time::timeout(Duration::from_secs(30), waiter.wait_with_output())
        .await
        .expect("the waiter got the lock once the holder was done")
        .expect("wait");
    assert_eq!(waiter.status.code(), Some(0), "{}", text(&waiter));
    assert!(
        text(&waiter).contains("with no time limit"),
        "{}",
        text(&waiter)
    );
    assert_eq!(holder.wait().await.expect("holder").code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_usage_errors_that_never_show_the_password() {
    let secret = "Se/cr?e#t@Pw";
    for (url, code) in [
        (
            "redis://127.0.0.1:6379?connect_timeout=1e19&response_timeout=1e19".to_owned(),
            USAGE,
        ),
        (format!("redis:app:{secret}@127.0.0.1:6379"), USAGE),
        (
            format!("redis://app:{secret}@127.0.0.1:6379?colour=red"),
            USAGE,
        ),
        (format!("memory://app:{secret}@x"), USAGE),
        (format!("zookeeper://app:{secret}@x"), USAGE),
        // Parsed (the password may hold any character), then unreachable.
        (
            format!("redis://app:{secret}@127.0.0.1:1?connect_timeout=100ms"),
            70,
        ),
    ] {
        let run = output(pylock(&url).args(["run", "--timeout", "0.3", "k", "--", "true"])).await;
        assert_eq!(run.status.code(), Some(code), "{url}: {}", text(&run));
        let said = text(&run);
        for part in ["cr?e", "t@Pw", "Se/"] {
            assert!(!said.contains(part), "{url} showed its password: {said}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_64_on_one_line_with_a_hint_and_help_exits_0() {
    for (args, hint) in [
        (&["run"][..], "pylock run --help"),
        (&["run", "k"][..], "pylock run --help"),
        (&["--bogus", "status", "k"][..], "pylock status --help"),
        (
            &["run", "--expires", "soon", "k", "--", "true"][..],
            "pylock run --help",
        ),
        (
            &["run", "--signal", "SIGFOO", "k", "--", "true"][..],
            "pylock run --help",
        ),
        (&["frobnicate"][..], "pylock --help"),
        (&["release", "--force"][..], "pylock release --help"),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pylock"));
        command.env_remove("PYLOCK_URL").args(args);
        let run = output(&mut command).await;
        assert_eq!(run.status.code(), Some(USAGE), "{args:?}: {}", text(&run));
        let said = String::from_utf8_lossy(&run.stderr);
        assert_eq!(said.lines().count(), 1, "{args:?}: not one line: {said}");
        assert!(said.starts_with("pylock: "), "{args:?}: {said}");
        assert!(said.contains(hint), "{args:?}: no hint {hint:?}: {said}");
    }
    for args in [&["--help"][..], &["--version"][..], &["run", "--help"][..]] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pylock"));
        command.env_remove("PYLOCK_URL").args(args);
        let run = output(&mut command).await;
        assert_eq!(run.status.code(), Some(0), "{args:?}: {}", text(&run));
    }
    // A backend asked for what it cannot do: bad usage too, said before any network call.
    let run = output(
        Command::new(env!("CARGO_BIN_EXE_pylock"))
            .env("PYLOCK_URL", "memcache://127.0.0.1:1")
            .args(["run", "--fair", "k", "--", "true"]),
    )
    .await;
    assert_eq!(run.status.code(), Some(USAGE), "{}", text(&run));
    assert!(text(&run).contains("fair"), "{}", text(&run));
    // `pylock` alone shows the help, but did nothing: bad usage.
    let run = output(Command::new(env!("CARGO_BIN_EXE_pylock")).env_remove("PYLOCK_URL")).await;
    assert_eq!(run.status.code(), Some(USAGE), "{}", text(&run));
    assert!(text(&run).contains("Usage"), "{}", text(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_from_a_file_and_rust_log_work() {
    let Some(server) = redis().await else {
        return;
    };
    let key = format!("env-{}", std::process::id());
    // PYLOCK_URL read from a file keeps its newline; the library trims it, so does the CLI.
    let mut command = Command::new(env!("CARGO_BIN_EXE_pylock"));
    command
        .env("PYLOCK_URL", format!("{}\n", server.url()))
        .env("RUST_LOG", "pylock=debug")
        .args(["run", &key, "--", "true"]);
    let run = output(&mut command).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("pylock.acquire"),
        "RUST_LOG shows the spans: {said}"
    );

    // -v: each acquire and hold as it closes, with what an operator graphs; no colour codes
    // when stderr is not a terminal.
    let mut command = Command::new(env!("CARGO_BIN_EXE_pylock"));
    command
        .env("PYLOCK_URL", server.url())
        .env_remove("RUST_LOG")
        .args(["run", "-v", &key, "--", "true"]);
    let run = output(&mut command).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let said = String::from_utf8_lossy(&run.stderr);
    let acquire = said
        .lines()
        .find(|line| line.contains("pylock.acquire"))
        .unwrap_or_else(|| panic!("-v shows no acquire: {said}"));
    for field in [
        "attempts=1",
        "waited_us=",
        "outcome=\"acquired\"",
        "backend=\"redis\"",
    ] {
        assert!(acquire.contains(field), "{field} missing: {acquire}");
    }
    let hold = said
        .lines()
        .find(|line| line.contains("pylock.hold"))
        .unwrap_or_else(|| panic!("-v shows no hold: {said}"));
    for field in ["fence=", "held_us=", "end=\"released\""] {
        assert!(hold.contains(field), "{field} missing: {hold}");
    }
    assert!(!said.contains('\u{1b}'), "colour codes in a pipe: {said}");
    // Without -v or RUST_LOG, a run says nothing.
    let mut command = Command::new(env!("CARGO_BIN_EXE_pylock"));
    command
        .env("PYLOCK_URL", server.url())
        .env_remove("RUST_LOG")
        .args(["run", &key, "--", "true"]);
    let run = output(&mut command).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(run.stderr.is_empty(), "{}", text(&run));
}

/// Reads `stderr` until a line contains `wanted`; the lines read.
async fn until_said(stderr: &mut tokio::process::ChildStderr, wanted: &str) -> String {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut lines = BufReader::new(stderr).lines();
    let mut said = String::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            said.push_str(&line);
            said.push('\n');
            if line.contains(wanted) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("never said {wanted:?}: {said}"));
    said
}

/// Starts `command` (a `pylock run` on a held lock) and returns once it says it waits, with its
/// stderr for what it says next.
async fn started_waiting(command: &mut Command) -> (Child, tokio::process::ChildStderr) {
    let mut waiter = command.stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stderr = waiter.stderr.take().expect("stderr");
    until_said(&mut stderr, "waiting").await;
    (waiter, stderr)
}

/// A fair waiter on `lock` that joins the line half a second from now, behind one already
/// waiting, and gives up after 7 s: it gets the lock when the holder is done only if the one
/// ahead of it left the line, rather than after that one's patience (15 s).
fn behind(lock: &pylock::Lock) -> tokio::task::JoinHandle<pylock::Result<pylock::LockGuard>> {
    let lock = lock.clone().timeout(Duration::from_secs(7));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lock.acquire().await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_while_waiting_ends_the_wait_and_never_starts_the_command() {
    for kind in [Kind::Redis, Kind::Etcd] {
        let Some(server) = TestServer::start(kind, Needs::any()).await else {
            return;
        };
        let locks = pylock::connect(server.url()).expect("url");
        let dir = scratch(&format!("stopped-waiter-{kind:?}"));
        for (name, number, fair) in [("-TERM", 15, false), ("-INT", 2, true)] {
            let key = format!("stopped-{}-{fair}", std::process::id());
            let lock = locks.lock(key.as_str()).expires(Duration::from_secs(60));
            let lock = if fair { lock.fair() } else { lock };
            let held = lock.acquire().await.expect("the holder");
            let ran = dir.join(format!("ran-{fair}"));
            let mut run = vec!["run", "--timeout", "60"];
            if fair {
                run.push("--fair");
            }
            let (mut waiter, mut stderr) = started_waiting(
                pylock(server.url())
                    .args(run)
                    .args([key.as_str(), "--", "touch"])
                    .arg(&ran),
            )
            .await;
            let behind = fair.then(|| behind(&lock));
            tokio::time::sleep(Duration::from_secs(1)).await;

            signal(waiter.id().expect("pid"), name);
            let status = tokio::time::timeout(Duration::from_secs(15), waiter.wait())
                .await
                .expect("the stopped waiter exits")
                .expect("wait");
            let said = until_said(&mut stderr, "not started").await;
            assert_eq!(status.code(), Some(128 + number), "{kind:?} {name}: {said}");
            assert!(
                !ran.exists(),
                "{kind:?} {name}: the command ran after the stop"
            );

            held.release().await.expect("the holder releases");
            let next = match behind {
                Some(behind) => behind.await.expect("task"),
                None => lock.clone().timeout(Duration::ZERO).acquire().await,
            };
            next.unwrap_or_else(|e| {
                panic!("{kind:?} {name}: the stopped waiter left something behind: {e}")
            })
            .release()
            .await
            .expect("release");
            assert!(
                !ran.exists(),
                "{kind:?} {name}: the command ran after the stop"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_wait_that_times_out_leaves_the_line_before_exiting() {
    for kind in [Kind::Redis, Kind::Etcd] {
        let Some(server) = TestServer::start(kind, Needs::any()).await else {
            return;
        };
        let locks = pylock::connect(server.url()).expect("url");
        let key = format!("fair-timeout-{}", std::process::id());
        let lock = locks
            .lock(key.as_str())
            .expires(Duration::from_secs(60))
            .fair();
        let held = lock.acquire().await.expect("the holder");
        let (mut waiter, _stderr) = started_waiting(pylock(server.url()).args([
            "run",
            "--fair",
            "--timeout",
            "2",
            key.as_str(),
            "--",
            "true",
        ]))
        .await;
        let behind = behind(&lock);
        let status = tokio::time::timeout(Duration::from_secs(15), waiter.wait())
            .await
            .expect("the waiter gives up")
            .expect("wait");
        assert_eq!(status.code(), Some(TIMEOUT), "{kind:?}");
        held.release().await.expect("the holder releases");
        behind
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("{kind:?}: the timed-out waiter kept its place: {e}"))
            .release()
            .await
            .expect("release");
    }
}
