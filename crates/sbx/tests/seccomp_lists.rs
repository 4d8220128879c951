//! The OCI filter of `crun`/`runc` sandboxes (system call names) allows exactly what the native
//! backend's filter allows (numbers) without argument checks: one policy, written twice
//! because the two filters take different forms. Names become numbers through the kernel's
//! own table, `asm/unistd_64.h` (libc6-dev, which `scripts/setup --test` installs).

#![cfg(all(feature = "native", feature = "oci", target_arch = "x86_64"))]

use std::collections::{BTreeMap, BTreeSet};

#[test]
fn the_oci_filter_allows_what_the_native_filter_allows() {
    let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
        .expect("the kernel's system call table (apt-get install libc6-dev)");
    let mut numbers: BTreeMap<&str, i64> = header
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("#define __NR_")?.split_whitespace();
            Some((words.next()?, words.next()?.parse().ok()?))
        })
        .collect();
    assert!(numbers.len() > 300, "a short table: {}", numbers.len());
    // Newer than Debian 12's headers (the native filter names their numbers itself).
    for (name, nr) in [
        ("cachestat", 451),
        ("fchmodat2", 452),
        ("map_shadow_stack", 453),
    ] {
        numbers.entry(name).or_insert(nr);
    }
    // The native filter checks ioctl's request (no TIOCSTI, TIOCLINUX); an OCI filter cannot
    // refuse two values of one argument, so it allows ioctl whole (docs/oci.md).
    const UNCHECKED_IN_OCI: [&str; 1] = ["ioctl"];
    assert!(sbx_backend_oci::SECCOMP_ALLOWED.contains(&"ioctl"));
    let oci: BTreeSet<i64> = sbx_backend_oci::SECCOMP_ALLOWED
        .iter()
        .filter(|name| !UNCHECKED_IN_OCI.contains(name))
        .map(|name| {
            *numbers
                .get(name)
                .unwrap_or_else(|| panic!("{name} is no system call of this kernel"))
        })
        .collect();
    assert_eq!(
        oci.len(),
        sbx_backend_oci::SECCOMP_ALLOWED.len() - UNCHECKED_IN_OCI.len(),
        "a name twice"
    );
    let native: BTreeSet<i64> = sbx_backend_native::SECCOMP_ALLOWED
        .iter()
        .copied()
        .collect();
    let name = |nr: &i64| {
        numbers
            .iter()
            .find(|(_, n)| *n == nr)
            .map_or(nr.to_string(), |(name, _)| name.to_string())
    };
    let only_oci: Vec<_> = oci.difference(&native).map(name).collect();
    let only_native: Vec<_> = native.difference(&oci).map(name).collect();
    assert!(
        only_oci.is_empty() && only_native.is_empty(),
        "only in the OCI filter: {only_oci:?}; only in the native filter: {only_native:?}"
    );
}
