//! The slice snapshot manifest: property-tested round trip through JSON and through a durable
//! write, refusal of an unknown major format version, acceptance of a newer minor.

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use vnsnap_am::snapshot::coordinator::{Frames, Timings, VmCut};
use vnsnap_am::snapshot::manifest::{
    read, write_durable, FormatVersion, Manifest, ManifestError, VmEntry, FORMAT, FORMAT_VERSION,
};
use vnsnap_proto::{Boot, CommitReply, DiskSpec, DomainCut, DomainImage, DomainSpec, ImageFile, NicSpec};

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including quotes, backslashes and control characters JSON must escape.
    ".{0,24}"
}

fn file() -> impl Strategy<Value = ImageFile> {
    ("[a-z0-9/._-]{1,30}", any::<u64>(), "[0-9a-f]{64}").prop_map(|(path, bytes, blake3)| ImageFile {
        path,
        bytes,
        blake3,
        saved_at_ns: None,
    })
}

fn boot() -> impl Strategy<Value = Boot> {
    prop_oneof![
        Just(Boot::Disk),
        (text(), proptest::option::of(text()), text()).prop_map(|(kernel, initrd, cmdline)| Boot::Kernel {
            kernel,
            initrd,
            cmdline
        }),
    ]
}

fn spec() -> impl Strategy<Value = DomainSpec> {
    (
        "[a-z0-9-]{1,20}",
        1u32..64,
        any::<u64>(),
        boot(),
        proptest::collection::vec((text(), proptest::option::of(any::<u64>())), 0..3),
        proptest::collection::vec(("[0-9a-f:]{17}", any::<u32>(), proptest::collection::vec(text(), 0..2)), 0..3),
        proptest::option::of(text()),
        any::<bool>(),
    )
        .prop_map(|(name, vcpus, memory_mib, boot, disks, nics, hostname, autostart)| DomainSpec {
            name,
            vcpus,
            memory_mib,
            boot,
            disks: disks.into_iter().map(|(base, size_mib)| DiskSpec { base, size_mib }).collect(),
            nics: nics.into_iter().map(|(mac, segment, ips)| NicSpec { mac, segment, ips }).collect(),
            hostname,
            autostart,
        })
}

fn cut() -> impl Strategy<Value = DomainCut> {
    ("[a-z0-9-]{1,20}", any::<u128>(), any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
        |(domain, cut_at_ns, pause_us, qemu_downtime_ms)| DomainCut {
            domain,
            cut_at_ns,
            pause_us,
            qemu_downtime_ms,
            steps_us: Default::default(),
        },
    )
}

fn image() -> impl Strategy<Value = DomainImage> {
    (
        "[a-z0-9-]{1,20}",
        spec(),
        file(),
        proptest::collection::vec(file(), 0..3),
        proptest::collection::vec(file(), 0..3),
        proptest::collection::vec(any::<u64>(), 0..3),
        cut(),
        any::<bool>(),
    )
        .prop_map(|(domain, spec, memory, disks, channel_logs, epochs, cut, guest_agent)| DomainImage {
            domain,
            spec,
            memory,
            disks,
            channel_logs,
            epochs,
            cut,
            guest_agent,
        })
}

fn commit() -> impl Strategy<Value = CommitReply> {
    (text(), text(), proptest::collection::vec(image(), 0..3), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(host, dir, domains, held_frames, recorded_frames, dropped_frames)| CommitReply {
            host,
            dir,
            domains,
            held_frames,
            recorded_frames,
            dropped_frames,
        },
    )
}

fn vm_cut() -> impl Strategy<Value = VmCut> {
    (text(), "[a-z0-9-]{1,20}", any::<u128>(), any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
        |(host, domain, cut_at_ns, pause_us, qemu_downtime_ms)| VmCut {
            host,
            domain,
            cut_at_ns,
            pause_us,
            qemu_downtime_ms,
            steps_us: Default::default(),
        },
    )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    let head = (
        "[0-9a-f-]{36}",
        text(),
        "[A-Za-z0-9_-]{1,64}",
        text(),
        text(),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        any::<u64>(),
        text(),
        0u32..1000,
    );
    let body = (
        proptest::collection::vec((text(), text(), text(), "[a-z0-9-]{1,20}"), 0..4),
        proptest::collection::vec(vm_cut(), 0..4),
        any::<u64>(),
        any::<[u64; 5]>(),
        any::<[u64; 3]>(),
        any::<u64>(),
        proptest::collection::vec(commit(), 0..3),
    );
    (head, body).prop_map(
        |(
            (snapshot_id, snapshot_urn, name, slice_urn, owner, created, epoch, manifest_rspec, minor),
            (vms, cuts, skew_ns, t, f, image_bytes, hosts),
        )| Manifest {
            format: FORMAT.into(),
            format_version: FormatVersion { major: FORMAT_VERSION.major, minor },
            generator: "vnsnap-am test".into(),
            snapshot_id,
            snapshot_urn,
            name,
            slice_urn,
            owner,
            created,
            epoch,
            manifest_rspec,
            vms: vms
                .into_iter()
                .map(|(client_id, sliver_urn, host, domain)| VmEntry { client_id, sliver_urn, host, domain })
                .collect(),
            cuts,
            skew_ns,
            timings: Timings { prepare_ms: t[0], cut_ms: t[1], save_ms: t[2], commit_ms: t[3], total_ms: t[4] },
            frames: Frames { held: f[0], recorded: f[1], dropped: f[2] },
            image_bytes,
            hosts,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn manifest_round_trips_through_json(m in manifest()) {
        let back = Manifest::from_json(m.to_json().as_bytes()).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn rejects_every_other_major(major in 0u32..1000, minor in 0u32..1000) {
        prop_assume!(major != FORMAT_VERSION.major);
        let text = format!(r#"{{"format":"{FORMAT}","format_version":"{major}.{minor}","whatever":[1,2]}}"#);
        let e = Manifest::from_json(text.as_bytes()).unwrap_err();
        let is_unsupported = matches!(e, ManifestError::UnsupportedVersion { found, .. } if found.major == major);
        prop_assert!(is_unsupported, "{e}");
    }
}

fn sample() -> Manifest {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut m = manifest().new_tree(&mut runner).unwrap().current();
    m.snapshot_id = "0f8c2a4e-1b2c-4d5e-8f90-123456789abc".into();
    // The tests below edit the JSON through serde_json::Value, which holds integers above
    // u64 as floats: keep the cut instants in u64 range there (the round trip above covers
    // the full u128 range).
    for c in &mut m.cuts {
        c.cut_at_ns %= 1 << 63;
    }
    for d in m.hosts.iter_mut().flat_map(|h| &mut h.domains) {
        d.cut.cut_at_ns %= 1 << 63;
    }
    m
}

#[test]
fn durable_write_round_trips_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample();
    let path = write_durable(dir.path(), &m).unwrap();
    assert_eq!(path, dir.path().join("snapshots").join(format!("{}.json", m.snapshot_id)));
    assert_eq!(read(&path).unwrap(), m);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{}.json", m.snapshot_id)]);
    // Rewriting replaces the file whole.
    let mut m2 = m.clone();
    m2.name = "other".into();
    write_durable(dir.path(), &m2).unwrap();
    assert_eq!(read(&path).unwrap().name, "other");
}

#[test]
fn refuses_unknown_major_with_a_clear_error() {
    let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
    v["format_version"] = serde_json::Value::String("2.0".into());
    let e = Manifest::from_json(v.to_string().as_bytes()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("2.0") && msg.contains("1.x"), "{msg}");
}

#[test]
fn accepts_newer_minor_with_unknown_fields() {
    let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
    v["format_version"] = serde_json::Value::String("1.7".into());
    v["added_in_1_7"] = serde_json::json!({"anything": true});
    let m = Manifest::from_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(m.format_version, FormatVersion { major: 1, minor: 7 });
}

#[test]
fn refuses_a_manifest_with_a_field_missing() {
    let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
    v.as_object_mut().unwrap().remove("hosts");
    assert!(matches!(Manifest::from_json(v.to_string().as_bytes()), Err(ManifestError::Malformed(_))));
}

#[test]
fn refuses_a_bad_snapshot_id_as_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = sample();
    m.snapshot_id = "../escape".into();
    assert!(matches!(write_durable(dir.path(), &m), Err(ManifestError::BadId(_))));
}
