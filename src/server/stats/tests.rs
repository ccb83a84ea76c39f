//! Counters, their snapshots, the live histograms and the file classes.

use super::*;

#[test]
fn every_counter_has_its_place_and_a_distinct_name() {
    for (i, c) in Counter::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i, "{c:?} out of place in ALL");
        assert!(!c.help().is_empty());
    }
    let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Counter::COUNT);
}

#[test]
fn add_set_get_and_values_agree() {
    let c = Counters::default();
    c.add(Counter::Ok, 2);
    c.add(Counter::Ok, 1);
    c.set(Counter::Active, 7);
    assert_eq!((c.get(Counter::Ok), c.get(Counter::Active)), (3, 7));
    let v = c.values();
    assert_eq!(v.get(Counter::Ok), 3);
    let named: Vec<(&str, u64)> = v.iter().map(|(c, n)| (c.name(), n)).collect();
    assert_eq!(named[1], ("ok", 3));
    assert_eq!(named[Counter::COUNT - 1], ("active", 7));
}

#[test]
fn histograms_and_finishes_land_in_their_buckets() {
    let c = Counters::default();
    c.finish(Direction::Write, Finish::NotFound);
    c.record_duration(1, Duration::from_millis(3));
    c.record_duration(99, Duration::from_secs(1000));
    c.record_negotiated(1468, 64);
    c.record_first_ack(0, Duration::from_micros(300));
    c.record_first_ack(99, Duration::from_secs(20));
    let v = c.values();
    assert_eq!((v.finished(Direction::Write, Finish::NotFound), v.finished(Direction::Read, Finish::NotFound)), (1, 0));
    assert_eq!(v.duration(1).counts[1], 1);
    assert_eq!((v.duration(FILE_CLASSES_MAX).counts[DURATION_SLOTS - 1], v.duration(1).sum), (1, 3000));
    assert_eq!((v.first_ack(0).counts[2], v.first_ack(0).sum, v.first_ack(0).count()), (1, 300, 1));
    assert_eq!(v.first_ack(FILE_CLASSES_MAX).counts[FIRST_ACK_SLOTS - 1], 1);
    assert_eq!((v.blksize().counts[4], v.windowsize().counts[6]), (1, 1));
    let mut m = *v.blksize();
    m.merge(v.blksize());
    assert_eq!(m.count(), 2);
}

#[test]
fn file_classes_match_globs_and_prefixes_in_order() {
    let mut f = FileClasses::default();
    f.add("pxe=pxelinux.cfg/").unwrap();
    f.add("efi=*.efi").unwrap();
    f.add("kernel=vmlinuz-?.*").unwrap();
    f.add("pxe=*.0").unwrap();
    assert_eq!(f.names(), ["pxe", "efi", "kernel"]);
    assert_eq!(f.classify(b"pxelinux.cfg/01-aa-bb"), 0);
    assert_eq!(f.classify(b"boot/grubx64.efi"), 1);
    assert_eq!(f.classify(b"vmlinuz-6.1"), 2);
    assert_eq!(f.classify(b"pxelinux.0"), 0);
    assert_eq!(f.classify(b"initrd.img"), 3);
    assert_eq!(f.add("x"), Err(FileClassError::Syntax("x".into())));
    assert_eq!(f.add("other=a"), Err(FileClassError::Name("other".into())));
    assert_eq!(f.add("a b=a"), Err(FileClassError::Name("a b".into())));
    for i in 0..5 {
        f.add(&format!("c{i}=x{i}")).unwrap();
    }
    assert_eq!(f.add("c9=y"), Err(FileClassError::TooMany));
    assert!(classes::matches(b"a*b*c", b"axxbyyc") && !classes::matches(b"a*b", b"ac") && classes::matches(b"*", b""));
}
