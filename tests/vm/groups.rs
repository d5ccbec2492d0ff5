//! supplementalGroupsPolicy (Kubernetes v1.35): what `id` prints inside,
//! what ContainerStatus.user reports (read from the kernel), ExecSync running
//! with the same identity, and the node-wide enforcement option.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`.

use std::time::Duration;

use berth_proto::cri;
use berth_tests::*;

fn image(name: &str) -> String {
    format!("{}/library/{name}:latest", registry())
}

/// (uid, gid, groups) parsed from `id` output like
/// `uid=1000(u) gid=3000 groups=3000,4000,50000(g)`.
fn parse_id(s: &str) -> (i64, i64, Vec<i64>) {
    let num = |field: &str| -> Vec<i64> {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix(field))
            .map(|v| {
                v.split(',')
                    .map(|g| g.split('(').next().unwrap().parse().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    (num("uid=")[0], num("gid=")[0], num("groups="))
}

struct Case<'a> {
    image: &'a str,
    run_as_user: Option<i64>,
    run_as_username: &'a str,
    run_as_group: Option<i64>,
    groups: &'a [i64],
    strict: bool,
}

/// Runs `id` as the container's process and, while it runs, through
/// ExecSync; returns the container's `id`, the ExecSync `id` and the status.
async fn run_case(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    case: &Case<'_>,
) -> Result<(String, String, cri::ContainerStatus), tonic::Status> {
    let mut cfg = container_config(name, &image(case.image), &["sh", "-c", "id; sleep 30"]);
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        run_as_user: case.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_username: case.run_as_username.into(),
        run_as_group: case.run_as_group.map(|value| cri::Int64Value { value }),
        supplemental_groups: case.groups.to_vec(),
        supplemental_groups_policy: if case.strict {
            cri::SupplementalGroupsPolicy::Strict
        } else {
            cri::SupplementalGroupsPolicy::Merge
        } as i32,
        ..Default::default()
    });
    let id = c.create(sb, &cfg, pod).await?;
    c.start(&id).await?;
    let log = b.log_dir().join(format!("{name}.log"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .filter_map(parse_cri_log_line)
            .find(|l| l.3.starts_with("uid="))
        {
            break l.3;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no id output in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exec = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["id".into()],
            timeout: 10,
        })
        .await?
        .into_inner();
    assert_eq!(exec.exit_code, 0, "{exec:?}");
    let status = c.status(&id).await?.status.unwrap();
    c.stop(&id, 0).await?;
    c.remove(&id).await?;
    Ok((
        first,
        String::from_utf8_lossy(&exec.stdout).trim().to_string(),
        status,
    ))
}

fn user_of(s: &cri::ContainerStatus) -> (i64, i64, Vec<i64>) {
    let u = s
        .user
        .as_ref()
        .and_then(|u| u.linux.as_ref())
        .expect("ContainerStatus.user.linux");
    (u.uid, u.gid, u.supplemental_groups.clone())
}

#[tokio::test]
async fn merge_and_strict_like_the_conformance_tests() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    for img in ["busybox-groups", "busybox-nogroup"] {
        c.pull(&image(img)).await.expect("pull");
    }
    let st = c.runtime_status().await.unwrap();
    assert!(
        st.features.unwrap().supplemental_groups_policy,
        "feature advertised"
    );
    let pod = pod_config("groups", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");

    // (uid, gid, groups) expected.
    type Want = (i64, i64, Vec<i64>);
    let cases: Vec<(&str, Case, Want)> = vec![
        (
            "merge",
            Case {
                image: "busybox-groups",
                run_as_user: Some(1000),
                run_as_username: "",
                run_as_group: Some(3000),
                groups: &[4000],
                strict: false,
            },
            (1000, 3000, vec![3000, 4000, 50000]),
        ),
        (
            "strict",
            Case {
                image: "busybox-groups",
                run_as_user: Some(1000),
                run_as_username: "",
                run_as_group: Some(3000),
                groups: &[4000],
                strict: true,
            },
            (1000, 3000, vec![3000, 4000]),
        ),
        (
            // Conformance: image user 1000 in group 50000, runAsUser 1000,
            // supplementalGroups [1234], Strict -> the primary gid is listed.
            "primary-gid",
            Case {
                image: "busybox-groups",
                run_as_user: Some(1000),
                run_as_username: "",
                run_as_group: None,
                groups: &[1234],
                strict: true,
            },
            (1000, 1000, vec![1000, 1234]),
        ),
        (
            "image-user",
            Case {
                image: "busybox-groups",
                run_as_user: None,
                run_as_username: "",
                run_as_group: None,
                groups: &[],
                strict: false,
            },
            (1000, 1000, vec![1000, 50000]),
        ),
        (
            "by-name",
            Case {
                image: "busybox-groups",
                run_as_user: None,
                run_as_username: "user-defined-in-image",
                run_as_group: None,
                groups: &[],
                strict: false,
            },
            (1000, 1000, vec![1000, 50000]),
        ),
        (
            "uid-not-in-passwd",
            Case {
                image: "busybox-groups",
                run_as_user: Some(4242),
                run_as_username: "",
                run_as_group: None,
                groups: &[],
                strict: false,
            },
            (4242, 0, vec![0]),
        ),
        (
            // kubelet passes fsGroup among the supplemental groups.
            "fsgroup",
            Case {
                image: "busybox-groups",
                run_as_user: Some(1000),
                run_as_username: "",
                run_as_group: None,
                groups: &[2000],
                strict: true,
            },
            (1000, 1000, vec![1000, 2000]),
        ),
        (
            "no-etc-group",
            Case {
                image: "busybox-nogroup",
                run_as_user: None,
                run_as_username: "user-defined-in-image",
                run_as_group: None,
                groups: &[],
                strict: false,
            },
            (1000, 1000, vec![1000]),
        ),
    ];
    for (name, case, want) in &cases {
        let (id_out, exec_out, status) = run_case(&mut c, &b, &sb, &pod, name, case).await.expect(name);
        println!("BERTH-ID {name}: container `{id_out}` exec `{exec_out}`");
        assert_eq!(parse_id(&id_out), *want, "{name}: id in the container: {id_out}");
        assert_eq!(parse_id(&exec_out), *want, "{name}: ExecSync id: {exec_out}");
        assert_eq!(user_of(&status), *want, "{name}: ContainerStatus.user");
    }
    // The Merge case was logged as one Strict would change.
    let info = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
        .info;
    let sg: serde_json::Value = serde_json::from_str(&info["supplementalGroups"]).unwrap();
    assert!(sg["mergedImageGroupsContainers"].as_u64().unwrap() >= 1, "{sg}");
    assert!(b.log().contains("Strict would drop them"));
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// ContainerStatus.user is what the kernel attached at start, kept in the
/// container record: it outlives the process and a berthd crash. A non-root
/// Strict identity makes sure it is not a default or a recomputation that
/// merges the image's groups back in.
#[tokio::test]
async fn strict_identity_survives_exit_and_a_berthd_crash() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&image("busybox-groups")).await.expect("pull");
    let pod = pod_config("groups-persist", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config("persist", &image("busybox-groups"), &["id"]);
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        run_as_group: Some(cri::Int64Value { value: 3000 }),
        supplemental_groups: vec![4000],
        supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    let exited = c.wait_exited(&id, Duration::from_secs(20)).await.expect("exit");
    assert_eq!(exited.exit_code, 0);
    let want = (1000, 3000, vec![3000, 4000]);
    assert_eq!(user_of(&exited), want, "after the process exited");
    b.kill_hard();
    let mut c = b.spawn().await.expect("berthd again");
    let after = c.status(&id).await.expect("status").status.unwrap();
    println!(
        "BERTH-ID persisted after exit + berthd crash: {:?}",
        user_of(&after)
    );
    assert_eq!(user_of(&after), want, "after a berthd crash");
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn node_enforcement_upgrades_or_rejects_merge() {
    let merge = Case {
        image: "busybox-groups",
        run_as_user: Some(1000),
        run_as_username: "",
        run_as_group: Some(3000),
        groups: &[4000],
        strict: false,
    };
    // upgrade: Merge runs as Strict.
    let (b, mut c) = Berthd::start_with("supplemental_groups_enforcement = \"upgrade\"\n")
        .await
        .expect("berthd");
    c.pull(&image("busybox-groups")).await.expect("pull");
    let pod = pod_config("enforce-up", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let (id_out, exec_out, status) = run_case(&mut c, &b, &sb, &pod, "upgraded", &merge).await.unwrap();
    println!("BERTH-ID upgraded: container `{id_out}` exec `{exec_out}`");
    assert_eq!(parse_id(&id_out), (1000, 3000, vec![3000, 4000]));
    assert_eq!(user_of(&status), (1000, 3000, vec![3000, 4000]));
    c.stop_and_remove_pod(&sb).await.unwrap();
    drop((b, c));

    // reject: a clear InvalidArgument, nothing created.
    let (b, mut c) = Berthd::start_with("supplemental_groups_enforcement = \"reject\"\n")
        .await
        .expect("berthd");
    c.pull(&image("busybox-groups")).await.expect("pull");
    let pod = pod_config("enforce-rej", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let e = run_case(&mut c, &b, &sb, &pod, "rejected", &merge)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("enforces Strict"), "{}", e.message());
    let strict = Case {
        strict: true,
        ..merge
    };
    let (id_out, _, _) = run_case(&mut c, &b, &sb, &pod, "allowed", &strict).await.unwrap();
    assert_eq!(parse_id(&id_out), (1000, 3000, vec![3000, 4000]));
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.containers.is_empty(), "{left:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn exec_sync_output_exit_code_and_timeout() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&image("busybox")).await.expect("pull");
    let pod = pod_config("execs", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let id = c
        .create(
            &sb,
            &container_config("app", &image("busybox"), &["sleep", "300"]),
            &pod,
        )
        .await
        .unwrap();
    c.start(&id).await.unwrap();
    let exec = |cmd: &[&str], timeout: i64| cri::ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let r = c
        .runtime
        .exec_sync(exec(
            &["sh", "-c", "echo out; echo err >&2; hostname; exit 3"],
            10,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).to_string(),
            String::from_utf8_lossy(&r.stderr).to_string()
        ),
        (3, "out\nexecs\n".to_string(), "err\n".to_string())
    );
    // Same filesystem and PID namespace as the container.
    let r = c
        .runtime
        .exec_sync(exec(&["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"], 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "sleep 300 ");
    // DeadlineExceeded comes only from the timeout path (a command that ran
    // its 60 s would report exit 0).
    let e = c.runtime.exec_sync(exec(&["sleep", "60"], 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(
        processes_matching("sleep 60").is_empty(),
        "timed-out command killed"
    );
    let e = c
        .runtime
        .exec_sync(exec(&["no-such-binary"], 10))
        .await
        .unwrap_err();
    assert!(e.message().contains("no-such-binary"), "{e:?}");
    let e = c.runtime.exec_sync(exec(&[], 10)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    c.stop_and_remove_pod(&sb).await.unwrap();
}
