//! `train.host_memory` on glibc's real allocator. Its own binary without the test harness: the
//! policies are process-wide, and the main thread allocates from glibc's main heap, as the
//! training thread does (the harness would run this on a thread with an arena of its own).
use sagan::config::HostMemory;

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Bytes of the main heap ([heap] in /proc/self/maps): no free chunk in it is larger.
fn heap_bytes() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| l.ends_with("[heap]"))
        .map(|l| {
            let (range, _) = l.split_once(' ').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            usize::from_str_radix(b, 16).unwrap() - usize::from_str_radix(a, 16).unwrap()
        })
        .sum()
}

/// Writes and frees a block larger than 32 MiB and than any free space in the heap, so that
/// glibc must either grow the heap or map it; returns (block KiB, KiB still resident after
/// the free).
fn kept_after_free() -> (usize, usize) {
    let bytes = (40 << 20).max(heap_bytes() + (8 << 20));
    let before = rss_kib();
    let mut block = Vec::<u8>::with_capacity(bytes);
    block.resize(bytes, 1);
    assert_eq!(std::hint::black_box(&block)[bytes - 1], 1);
    let during = rss_kib().saturating_sub(before);
    assert!(during > (bytes >> 10) / 2, "never resident: {during} KiB");
    drop(block);
    (bytes >> 10, rss_kib().saturating_sub(before))
}

fn main() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        eprintln!("not glibc: train.host_memory changes nothing here");
        return;
    }
    for (policy, returned) in [
        (HostMemory::MapLarge, true),
        (HostMemory::KeepAll, false),
        // Back to mapping, with the heap now holding the freed block.
        (HostMemory::MapLarge, true),
    ] {
        sagan::host::alloc::apply(policy);
        let (size, kept) = kept_after_free();
        let ok = if returned {
            kept < size / 8
        } else {
            kept > size / 2
        };
        assert!(
            ok,
            "{policy:?}: a freed block of {} MiB should {}, but {} MiB stayed resident",
            size >> 10,
            if returned {
                "go back to the system"
            } else {
                "stay in the heap"
            },
            kept >> 10
        );
        println!(
            "{policy:?}: {} MiB block freed, {} MiB stayed",
            size >> 10,
            kept >> 10
        );
    }
}
