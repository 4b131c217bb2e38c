//! The seccomp filter every bubblewrap sandbox runs under: system calls that an unprivileged
//! program has no use for in a sandbox, and that are where kernel escapes come from, fail with
//! `ENOSYS` (as if the kernel did not have them, so that libraries fall back: glibc's thread
//! creation falls back from `clone3`, whose flags a filter cannot read, to `clone`).
//!
//! Refused: new namespaces (`unshare`, `setns`, and `clone` with any namespace flag: user
//! namespaces are the largest unprivileged attack surface), `io_uring`, `bpf`,
//! `perf_event_open`, `userfaultfd`, the kernel keyring, mounts and the new mount API,
//! `pivot_root`, kernel modules, `kexec`, `reboot`, swap, clocks, `acct`, `quotactl`, `syslog`,
//! file handles, and on x86-64 `iopl`/`ioperm`. Everything else is allowed; a call of another
//! architecture's ABI kills the process (the filter checks it first).
//!
//! The filter is compiled once (with `seccompiler`) into `<work_dir>/seccomp.bpf`, which
//! bubblewrap loads (`--seccomp`); the init of an interactive sandbox and every command it
//! forks inherit it.

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use std::collections::BTreeMap;

/// Every namespace flag of `clone`.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// System calls refused outright.
fn refused() -> Vec<i64> {
    #[allow(unused_mut)]
    let mut calls = vec![
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_clone3,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_lookup_dcookie,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    calls
}

/// This machine's architecture, as the filter names it; `None` where none is built.
fn target() -> Option<TargetArch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(TargetArch::x86_64),
        "aarch64" => Some(TargetArch::aarch64),
        _ => None,
    }
}

/// The filter as a compiled BPF program (native byte order, as the kernel and bubblewrap read
/// it).
pub fn program() -> Result<Vec<u8>, String> {
    let arch = target().ok_or_else(|| {
        format!(
            "no seccomp filter for {} (x86_64 and aarch64 only)",
            std::env::consts::ARCH
        )
    })?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        refused().into_iter().map(|c| (c, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("seccomp rule: {e}"))?;
    rules.insert(libc::SYS_clone, clone_rules);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp filter: {e}"))?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_filter_compiles_for_this_machine_into_whole_instructions() {
        if target().is_none() {
            return;
        }
        let bytes = program().unwrap();
        assert!(!bytes.is_empty());
        assert_eq!(bytes.len() % 8, 0, "each BPF instruction is 8 bytes");
        // Well under the kernel's 4,096 instructions.
        assert!(bytes.len() / 8 < 1024, "{} instructions", bytes.len() / 8);
    }
}
