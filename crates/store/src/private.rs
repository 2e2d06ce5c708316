//! Owner-only files: the ledger database (and its `-wal` and `-shm` companions), the spool, the
//! admin token, and the directories created for them. They hold usage, keys' hashes and
//! secrets: no other local user may read them. Directories this code creates are `0700`, files
//! `0600`; files made by an older version are tightened when opened. Directories that existed
//! before (a parent such as `/var/lib`) are left as they are. No-ops off Unix.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Creates `dir` and its missing parents, each new one readable by the owner only.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Opens `path` for appending, creating it owner-only (and tightening an existing file).
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    restrict_open(&file)?;
    Ok(file)
}

/// Makes sure the file at `path` exists and is owner-only; absent files are created empty.
pub fn ensure_file(path: &Path) -> std::io::Result<()> {
    open_append(path).map(drop)
}

/// Makes an existing file owner-only; a missing one is not an error.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    match File::open(path) {
        Ok(file) => restrict_open(&file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The permission bits of `path` (`0o600` for an owner-only file).
#[cfg(unix)]
pub fn mode(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

fn restrict_open(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        super::mode(path).unwrap()
    }
    #[test]
    fn new_dirs_and_files_are_owner_only_and_old_files_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("f");
        ensure_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        restrict(&dir.join("missing")).unwrap();
    }

    #[test]
    fn the_ledger_database_its_companions_and_the_spool_are_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let db = data.join("ledger.db");
        let conn = crate::open_connection(db.to_str().unwrap(), true).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(mode(&data), 0o700);
        for f in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
        drop(conn);
        // A database left world-readable by an older version is tightened on open.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(crate::open_connection(db.to_str().unwrap(), true).unwrap());
        assert_eq!(mode(&db), 0o600);

        let spool_dir = data.join("spool");
        drop(crate::spool::Spool::open(&spool_dir, 1 << 20, false).unwrap());
        assert_eq!(mode(&spool_dir), 0o700);
        assert_eq!(mode(&spool_dir.join("ledger.spool")), 0o600);
    }
}
