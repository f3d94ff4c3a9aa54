//! The one-kernel rule, first line: refusing file systems that another kernel can write too.
//!
//! Expiries are instants on one kernel's `CLOCK_BOOTTIME`, tagged with that kernel's boot id, and
//! a row of another boot id counts as expired (see [`crate::schema`]). That is right after a
//! reboot and wrong when a second kernel writes the same file at the same time: over NFS, SMB,
//! 9p, virtiofs, a FUSE mount shared into VMs or sandboxed containers, or a cluster file system,
//! each kernel judges the other's live leases expired and both hold the lease. Such file systems
//! are recognised by the magic number `statfs(2)` reports and refused at open, unless the caller
//! vouches that one kernel only ever touches the file
//! ([`SqliteStoreBuilder::allow_network_filesystem`](crate::SqliteStoreBuilder::allow_network_filesystem)).

use std::path::Path;

use crate::error::SqliteStoreError;

/// File systems another kernel may write at the same time as this one: network and
/// cluster file systems, and the ways a host shares directories into VMs and sandboxes. Each
/// is `(f_type magic, name)`, from `linux/magic.h` and the file systems' own sources.
pub(crate) const SHARED_FILESYSTEMS: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2/SMB3"),
    (0x0102_1997, "9p (v9fs: QEMU/virtio, WSL2, gVisor shares)"),
    (
        0x6573_5546,
        "FUSE (also virtiofs, sshfs, GlusterFS, CephFS-fuse, ...)",
    ),
    (0x00C3_6400, "Ceph"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "kAFS"),
    (0x7375_7245, "Coda"),
    (0x0BD0_0BD0, "Lustre"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
    (0x4750_4653, "GPFS (IBM Storage Scale)"),
    (0x1983_0326, "BeeGFS"),
    (0x2003_0528, "OrangeFS/PVFS2"),
    (0x564C, "NCP (NetWare)"),
    (0x786F_4256, "VirtualBox shared folder (vboxsf)"),
    (0xBACB_ACBC, "VMware shared folder (vmhgfs)"),
];

/// The name of the shared file system `magic` stands for, or `None` for one a single kernel
/// owns (ext4, xfs, btrfs, tmpfs, overlayfs, ...).
pub(crate) fn shared_filesystem(magic: u32) -> Option<&'static str> {
    SHARED_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// The `f_type` of the file system holding `path`, as the 32-bit magic `linux/magic.h` lists
/// (`f_type` is a signed word on some architectures, so CIFS's magic may read as negative).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn magic_of(path: &Path) -> std::io::Result<u32> {
    let stat = rustix::fs::statfs(path)?;
    let raw: i128 = stat.f_type.into();
    Ok(u32::try_from(raw & 0xFFFF_FFFF).unwrap_or(0))
}

/// Refuses the database at `path` (and its directory, where SQLite keeps `-wal` and `-shm`)
/// when it lives on a file system another kernel can write too.
///
/// # Errors
///
/// [`SqliteStoreError::SharedFileSystem`] naming the file system and the path; failures of
/// `statfs` itself are not errors (the open that follows reports an unusable path clearly).
pub(crate) fn refuse_shared(db: &Path, dir: &Path) -> Result<(), SqliteStoreError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    for checked in [dir, db] {
        // The file may not exist yet; its directory always does by now.
        let Ok(magic) = magic_of(checked) else {
            continue;
        };
        if let Some(name) = shared_filesystem(magic) {
            return Err(SqliteStoreError::SharedFileSystem {
                path: checked.to_path_buf(),
                filesystem: name,
                magic,
            });
        }
    }
    let _ = (db, dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_filesystem_is_refused_by_name() {
        let cases: [(u32, &str); 19] = [
            (0x6969, "NFS"),
            (0x517B, "SMB"),
            (0xFF53_4D42, "CIFS"),
            (0xFE53_4D42, "SMB2"),
            (0x0102_1997, "9p"),
            (0x6573_5546, "FUSE"),
            (0x00C3_6400, "Ceph"),
            (0x5346_414F, "AFS"),
            (0x6B41_4653, "kAFS"),
            (0x7375_7245, "Coda"),
            (0x0BD0_0BD0, "Lustre"),
            (0x0116_1970, "GFS2"),
            (0x7461_636F, "OCFS2"),
            (0x4750_4653, "GPFS"),
            (0x1983_0326, "BeeGFS"),
            (0x2003_0528, "OrangeFS"),
            (0x564C, "NCP"),
            (0x786F_4256, "vboxsf"),
            (0xBACB_ACBC, "vmhgfs"),
        ];
        assert_eq!(cases.len(), SHARED_FILESYSTEMS.len());
        for (magic, name) in cases {
            let found = shared_filesystem(magic);
            assert!(
                found.is_some_and(|n| n.contains(name)),
                "{magic:#x}: {found:?}"
            );
        }
        // virtiofs reports FUSE's magic.
        assert!(shared_filesystem(0x6573_5546).unwrap().contains("virtiofs"));
    }

    #[test]
    fn local_filesystems_are_accepted() {
        for (magic, name) in [
            (0xEF53, "ext2/3/4"),
            (0x5846_5342, "xfs"),
            (0x9123_683E, "btrfs"),
            (0x0102_1994, "tmpfs"),
            (0x794C_7630, "overlayfs"),
            (0x2FC1_2FC1, "zfs"),
            (0xF2F5_2010, "f2fs"),
            (0x3153_464A, "jfs"),
            (0x5265_4973, "reiserfs"),
            (0x4D44, "vfat"),
            (0x8584_58F6, "ramfs"),
        ] {
            assert_eq!(shared_filesystem(magic), None, "{name}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_signed_cifs_magic_reads_as_its_32_bit_value() {
        // What a 32-bit `f_type` holding CIFS's magic looks like once widened.
        let raw: i128 = i128::from(i32::from_ne_bytes(0xFF53_4D42_u32.to_ne_bytes()));
        assert_eq!(u32::try_from(raw & 0xFFFF_FFFF).unwrap(), 0xFF53_4D42);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_temp_directory_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("leases.db");
        let magic = magic_of(dir.path()).unwrap();
        assert_eq!(
            shared_filesystem(magic),
            None,
            "the test's temp dir: {magic:#x}"
        );
        refuse_shared(&db, dir.path()).unwrap();
    }
}
