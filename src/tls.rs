//! Certificates and the client listener's TLS: a small cluster CA (`raft_client certs init`),
//! leaf certificates signed by it (`raft_client certs issue`), loading PEM files into tonic's
//! TLS configs, and the [`Credentials`] a client dials a node with (CA and bearer token).
//!
//! Why our own CA: a cluster is a closed world. Its operator hands `ca.pem` to clients and one
//! leaf per node; nothing depends on the system's roots (tonic's `tls-native-roots` stays off),
//! so a certificate from any public CA is never accepted by mistake. A leaf carries both the
//! server and the client usage, so the same files can serve the client listener and, later,
//! authenticate peers to each other (mutual TLS).
//!
//! Every error names the file it is about: a node that cannot start its TLS says which file
//! is missing or unreadable, not that "a certificate" failed.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The CA's certificate file name inside a certs directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key file name inside a certs directory.
pub const CA_KEY: &str = "ca.key";
/// Metadata key of a client's credentials (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";
/// Environment variable a client reads its bearer token from when `--token` is absent.
pub const TOKEN_ENV: &str = "RUSTYRAFT_TOKEN";

/// A certificate or key file that cannot be used, or a certificate that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing, unreadable or unwritable.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but does not hold what it should (a PEM certificate or key).
    #[error("{}: {msg}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Refusing to overwrite an existing file (a CA key is never replaced silently: every
    /// certificate it signed would stop being trusted).
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(path: &Path, msg: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Reads a PEM certificate (or chain) and checks that it parses, so a bad file is reported
/// with its name at startup rather than as an anonymous handshake failure later.
pub fn read_cert(path: &Path) -> Result<String, TlsError> {
    let pem = read(path)?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid(path, "no PEM certificate in this file"));
    }
    let mut rest = pem.as_bytes();
    let mut n = 0;
    while let Some(at) = find(rest, b"-----BEGIN CERTIFICATE-----") {
        let (_, block) = x509_parser::pem::parse_x509_pem(&rest[at..])
            .map_err(|e| invalid(path, format!("certificate {}: bad PEM: {e}", n + 1)))?;
        block
            .parse_x509()
            .map_err(|e| invalid(path, format!("certificate {}: not X.509: {e}", n + 1)))?;
        n += 1;
        rest = &rest[at + 1..];
    }
    Ok(pem)
}

/// Reads a PEM private key and checks that it parses (PKCS#8: ECDSA, Ed25519 or RSA).
pub fn read_key(path: &Path) -> Result<String, TlsError> {
    let pem = read(path)?;
    KeyPair::from_pem(&pem).map_err(|e| invalid(path, format!("not a usable private key: {e}")))?;
    Ok(pem)
}

/// Writes `contents` to `path` atomically (temp file and rename), readable by the owner only
/// when `secret`, refusing to replace an existing file unless `overwrite`.
pub fn write_file(
    path: &Path,
    contents: &str,
    secret: bool,
    overwrite: bool,
) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !overwrite && path.exists() {
        return Err(TlsError::Exists(path.to_path_buf()));
    }
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn gen(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// `raft_client certs init --dir D`: creates a cluster CA (`D/ca.pem`, `D/ca.key`, valid for
/// until January 1st ten years on). Refuses to overwrite an existing CA. Returns the two paths.
pub fn init_ca(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(TlsError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate().map_err(gen)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "RustyRaft cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let cert = params.self_signed(&key).map_err(gen)?;
    write_file(&key_path, &key.serialize_pem(), true, false)?;
    write_file(&cert_path, &cert.pem(), false, false)?;
    Ok((cert_path, key_path))
}

/// `raft_client certs issue --dir D --name N --host H...`: a leaf certificate for `hosts` (IP
/// addresses or DNS names), signed by the CA in `dir`, usable as a server and as a client
/// certificate, valid until January 1st two years on. Writes `D/N.pem` and `D/N.key`
/// (replacing an older pair: re-issuing is how a leaf is renewed) and returns their paths.
pub fn issue(dir: &Path, name: &str, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Err(TlsError::Generate(format!(
            "--name {name:?}: use letters, digits, '-', '_' and '.' (it names the files)"
        )));
    }
    if hosts.is_empty() {
        return Err(TlsError::Generate(
            "at least one --host (an IP address or DNS name clients dial) is needed".into(),
        ));
    }
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)
        .map_err(|e| invalid(&ca_key_path, format!("not a usable private key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&read_cert(&ca_cert_path)?, ca_key)
        .map_err(|e| invalid(&ca_cert_path, format!("not a usable CA certificate: {e}")))?;
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| TlsError::Generate(format!("--host {hosts:?}: {e}")))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    let key = KeyPair::generate().map_err(gen)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    write_file(&key_path, &key.serialize_pem(), true, true)?;
    write_file(&cert_path, &cert.pem(), false, true)?;
    Ok((cert_path, key_path))
}

/// The current calendar year (validity is counted in whole years from January 1st: a year of
/// slack before today covers clocks that lag).
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

/// The client listener's TLS: this node's certificate and key, checked before use.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig, TlsError> {
    let identity = Identity::from_pem(read_cert(cert)?, read_key(key)?);
    Ok(ServerTlsConfig::new().identity(identity))
}

/// What a client trusts: the cluster CA in `ca` (and nothing else).
pub fn client_config(ca: &Path) -> Result<ClientTlsConfig, TlsError> {
    Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_cert(ca)?)))
}

/// The files of a node's peer mutual TLS (`--peer-tls-cert`, `--peer-tls-key`, `--peer-ca`): its
/// own certificate (served to peers that dial it, and shown to peers it dials) and the cluster
/// CA that every peer's certificate must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsFiles {
    /// This node's certificate (PEM), e.g. from `raft_client certs issue`.
    pub cert: std::path::PathBuf,
    /// Its private key (PEM).
    pub key: std::path::PathBuf,
    /// The CA that signed every member's certificate.
    pub ca: std::path::PathBuf,
}

impl PeerTlsFiles {
    /// The peer listener's TLS: this node's identity, and only clients holding a certificate
    /// of the cluster CA get through the handshake.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(server_config(&self.cert, &self.key)?
            .client_ca_root(Certificate::from_pem(read_cert(&self.ca)?)))
    }

    /// How this node dials peers: trusting only the cluster CA, and presenting its own
    /// certificate.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        let identity = Identity::from_pem(read_cert(&self.cert)?, read_key(&self.key)?);
        Ok(client_config(&self.ca)?.identity(identity))
    }
}

/// How a client reaches a node: plain or TLS (trusting the cluster CA), with or without a
/// bearer token. The CLI builds one from `--ca` and `--token`; a node builds one from its own
/// `--ca` (to forward sends to the leader and to `--join`) and passes the client's token along.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    tls: Option<ClientTlsConfig>,
    token: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Plain TCP, no token: a cluster that runs without TLS and auth.
    pub fn plain() -> Self {
        Self::default()
    }

    /// From the CLI's `--ca` and `--token` (the token falls back to `$RUSTYRAFT_TOKEN`).
    pub fn from_cli(ca: Option<&Path>, token: Option<&str>) -> Result<Self, String> {
        let mut c = Credentials::default();
        if let Some(ca) = ca {
            c = c.with_ca(ca).map_err(|e| e.to_string())?;
        }
        let env = std::env::var(TOKEN_ENV).ok();
        if let Some(t) = token.or(env.as_deref()).filter(|t| !t.is_empty()) {
            c = c.with_token(t)?;
        }
        Ok(c)
    }

    /// Dials over TLS, trusting only the CA in `ca`.
    pub fn with_ca(mut self, ca: &Path) -> Result<Self, TlsError> {
        self.tls = Some(client_config(ca)?);
        Ok(self)
    }

    /// Sends `token` as `authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: &str) -> Result<Self, String> {
        self.token = Some(bearer(token)?);
        Ok(self)
    }

    /// Sends this exact `authorization` value (a node passing a client's credentials along).
    pub fn with_authorization(mut self, value: Option<MetadataValue<Ascii>>) -> Self {
        self.token = value;
        self
    }

    /// Whether calls go over TLS (and so use `https://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `addr` as a URL with the right scheme: `host:port` gets `https://` under TLS, else
    /// `http://`; an explicit scheme is kept.
    pub fn url(&self, addr: &str) -> String {
        if addr.contains("://") {
            addr.to_string()
        } else if self.is_tls() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        }
    }

    /// An endpoint for `addr` with this TLS (lazy: nothing is dialled yet).
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let url = self.url(addr);
        let ep = Endpoint::from_shared(url.clone()).map_err(|e| format!("{url}: {e}"))?;
        match &self.tls {
            Some(tls) => ep
                .tls_config(tls.clone())
                .map_err(|e| format!("{url}: {e}")),
            None => Ok(ep),
        }
    }

    /// Adds the token (if any) to an outgoing request.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(t) = &self.token {
            req.metadata_mut().insert(AUTHORIZATION, t.clone());
        }
    }
}

/// Adds the token to every call of a client built over an intercepted channel.
impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.authorize(&mut req);
        Ok(req)
    }
}

/// `Bearer <token>` as a metadata value; a token with characters a header cannot carry is
/// refused here, with a clear message, rather than by the transport.
pub fn bearer(token: &str) -> Result<MetadataValue<Ascii>, String> {
    let token = token.trim();
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("the token must be non-empty printable ASCII".into());
    }
    let mut v =
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| format!("token: {e}"))?;
    // Never printed by Debug (a config or request in a log line).
    v.set_sensitive(true);
    Ok(v)
}

/// `raft_client certs`: make the cluster CA and node certificates.
#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a cluster CA: `<dir>/ca.pem` (give it to clients) and `<dir>/ca.key` (keep it
    /// offline). Never overwrites an existing CA.
    Init {
        /// Directory for the CA files.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue `<dir>/<name>.pem` and `<dir>/<name>.key`, signed by the CA in `<dir>`, for
    /// every --host (IP address or DNS name). Usable as server and client certificate.
    Issue {
        /// Directory holding the CA; the new files go there too.
        #[arg(long)]
        dir: PathBuf,
        /// Name of the files (and the certificate's common name), e.g. node1.
        #[arg(long)]
        name: String,
        /// An address clients dial this node by (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
}

impl CertsCommand {
    /// Runs the command; returns what to print (the files written).
    pub fn run(self) -> Result<String, TlsError> {
        Ok(match self {
            CertsCommand::Init { dir } => {
                let (cert, key) = init_ca(&dir)?;
                format!(
                    "CA certificate (give it to clients): {}\nCA key (keep it private): {}",
                    cert.display(),
                    key.display()
                )
            }
            CertsCommand::Issue { dir, name, hosts } => {
                let (cert, key) = issue(&dir, &name, &hosts)?;
                format!("certificate: {}\nkey: {}", cert.display(), key.display())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA signs leaves that parse back, a second `init` never replaces the CA, and bad
    /// files are reported with their names.
    #[test]
    fn init_issue_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = init_ca(dir.path()).unwrap();
        assert!(read_cert(&ca).is_ok() && read_key(&ca_key).is_ok());
        assert!(matches!(init_ca(dir.path()), Err(TlsError::Exists(_))));
        let hosts = vec!["127.0.0.1".to_string(), "node1".to_string()];
        let (cert, key) = issue(dir.path(), "node1", &hosts).unwrap();
        assert!(server_config(&cert, &key).is_ok());
        assert!(client_config(&ca).is_ok());
        let missing = dir.path().join("nope.pem");
        let e = read_cert(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let e = read_cert(&key).unwrap_err().to_string();
        assert!(e.contains("node1.key"), "{e}");
        let e = read_key(&cert).unwrap_err().to_string();
        assert!(e.contains("node1.pem"), "{e}");
        assert!(issue(dir.path(), "../x", &hosts).is_err());
        assert!(issue(dir.path(), "n", &[]).is_err());
    }

    #[test]
    fn urls_follow_tls() {
        assert_eq!(Credentials::plain().url("h:1"), "http://h:1");
        assert!(bearer("a b").is_err());
        assert_eq!(bearer("abc").unwrap().to_str().unwrap(), "Bearer abc");
    }
}
