//! `auditctl keys generate`: the Ed25519 key pair of signed checkpoints, and the keyring that pins
//! the public key for `auditctl verify --public-key DIR`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use audit_schema::checkpoint::SigningKey;

/// Writes `<dir>/checkpoint.key` (the secret seed, hex, readable by the owner only) and
/// `<dir>/checkpoint.pub` (the public key, hex), and adds the public key's line to
/// `<dir>/keyring` (`<fingerprint> checkpoint.pub`: what `verify` trusts in a key directory);
/// returns the public key's path. Existing keys are never overwritten.
pub fn generate(dir: &Path) -> anyhow::Result<PathBuf> {
    let (secret, public) = (dir.join("checkpoint.key"), dir.join("checkpoint.pub"));
    for path in [&secret, &public] {
        if path.exists() {
            bail!("{} exists: keys are never overwritten (move it away first)", path.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = SigningKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&secret).with_context(|| format!("creating {}", secret.display()))?;
    writeln!(file, "{}", key.to_hex())?;
    file.sync_all()?;
    std::fs::write(&public, format!("{}\n", key.public().to_hex()))
        .with_context(|| format!("writing {}", public.display()))?;
    let ring = dir.join(crate::verify::KEYRING);
    let mut ring_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ring)
        .with_context(|| format!("writing {}", ring.display()))?;
    writeln!(ring_file, "{} checkpoint.pub", key.public().fingerprint())?;
    Ok(public)
}
