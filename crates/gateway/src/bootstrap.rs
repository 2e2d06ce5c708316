//! First start of the embedded default: an admin token and a demo organization, project and key.

use std::path::Path;

use time::OffsetDateTime;
use tollgate_store::{AccountState, ApiKey, KeyRole, Organization, Project};

use crate::app::App;
use crate::tenancy::{KEY_PREFIX, generate_key, new_id};

/// Reads the admin token kept in `data_dir/admin-token`, creating a random one if absent. The
/// file and a data directory made here are readable by their owner only (an older, wider file
/// is tightened).
pub fn admin_token_file(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if !t.is_empty() {
            tollgate_store::private::restrict(&path)?;
            return Ok(t);
        }
    }
    tollgate_store::private::create_dir(data_dir)?;
    let (token, _, _) = generate_key("tgadm-");
    write_private(&path, &token)?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?
    };
    #[cfg(not(unix))]
    let mut file = std::fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

/// When the store has no organization yet, creates `demo` / `default` / a demo key and keeps the
/// key in `data_dir/demo-key` (readable by its owner only). Returns the demo key, if any.
pub async fn ensure_demo(app: &App, data_dir: &Path) -> Result<Option<String>, String> {
    let key_path = data_dir.join("demo-key");
    let orgs = app.store.organizations().await.map_err(|e| e.to_string())?;
    if !orgs.is_empty() {
        return Ok(std::fs::read_to_string(&key_path)
            .ok()
            .map(|k| k.trim().to_owned()));
    }
    let now = OffsetDateTime::now_utc();
    let org = Organization {
        id: new_id("org_"),
        name: "demo".into(),
        parent: None,
        state: AccountState::Active,
        created_at: now,
    };
    let project = Project {
        id: new_id("proj_"),
        organization: org.id.clone(),
        name: "default".into(),
        rpm: None,
        tpm: None,
        created_at: now,
    };
    let (secret, hash, prefix) = generate_key(KEY_PREFIX);
    let key = ApiKey {
        id: new_id("key_"),
        organization: org.id.clone(),
        project: Some(project.id.clone()),
        name: "demo".into(),
        prefix,
        hash,
        role: KeyRole::Inference,
        models: None,
        rpm: None,
        tpm: None,
        expires_at: None,
        revoked_at: None,
        created_at: now,
    };
    let e = |e: tollgate_store::StoreError| e.to_string();
    app.store
        .insert_organization(org.clone())
        .await
        .map_err(e)?;
    app.store.insert_project(project.clone()).await.map_err(e)?;
    app.store.insert_key(key.clone()).await.map_err(e)?;
    app.tenancy.put_org(&org);
    app.tenancy.put_project(&project);
    app.tenancy.put_key(&key);
    write_private(&key_path, &secret).map_err(|e| e.to_string())?;
    Ok(Some(secret))
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        tollgate_store::private::mode(path).unwrap()
    }
    #[test]
    fn the_admin_token_and_its_directory_are_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("tollgate-data");
        let token = admin_token_file(&data).unwrap();
        assert!(token.starts_with("tgadm-"));
        assert_eq!(mode(&data), 0o700);
        let file = data.join("admin-token");
        assert_eq!(mode(&file), 0o600);
        // A token file left world-readable is tightened, and the token kept.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(admin_token_file(&data).unwrap(), token);
        assert_eq!(mode(&file), 0o600);
    }
}
