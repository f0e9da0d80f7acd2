//! The connection flags shared by `stockctl`, `stock-loadgen` and `stock-analytics`:
//! `--server`, `--ca`, `--token`, `--data-dir`, `--server-name`, each with an environment variable.
//! With none given they point at a `stockd` started in the current folder (`./data`).

use super::{ClientConfig, ClientError};
use std::path::PathBuf;

/// Where the server is and how to prove who we are. Flatten into a clap parser.
#[derive(Clone, Debug, clap::Args)]
pub struct ConnectArgs {
    /// Server address, HOST:PORT (UDP).
    #[arg(long, env = "PERPETUA_SERVER", default_value = "127.0.0.1:7400", global = true, value_name = "HOST:PORT")]
    pub server: String,
    /// PEM certificate (or CA) that the server's certificate must chain to.
    /// [default: DATA_DIR/tls/cert.pem]
    #[arg(long, env = "PERPETUA_CA", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// API token. [default: the token in DATA_DIR/admin.token]
    #[arg(long, env = "PERPETUA_TOKEN", hide_env_values = true, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Data directory of a stockd on this machine, where the default certificate and admin
    /// token are read from.
    #[arg(long, env = "PERPETUA_DATA_DIR", default_value = "./data", global = true, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Name the server's certificate must carry. [default: the host part of --server]
    #[arg(long, env = "PERPETUA_SERVER_NAME", global = true, value_name = "NAME")]
    pub server_name: Option<String>,
}

impl Default for ConnectArgs {
    fn default() -> ConnectArgs {
        ConnectArgs {
            server: "127.0.0.1:7400".into(),
            ca: None,
            token: None,
            data_dir: "./data".into(),
            server_name: None,
        }
    }
}

impl ConnectArgs {
    /// A client configuration, reading the certificate and token files as needed. Errors say
    /// which file could not be read and what to do about it.
    pub fn config(&self) -> Result<ClientConfig, ClientError> {
        let ca_path = self.ca.clone().unwrap_or_else(|| self.data_dir.join(crate::server::tls::CERT_FILE));
        let ca_pem = std::fs::read(&ca_path).map_err(|e| {
            ClientError::Config(format!(
                "cannot read the server certificate {}: {e}; start stockd in this folder first, or pass --ca / PERPETUA_CA",
                ca_path.display()
            ))
        })?;
        let token = match &self.token {
            Some(t) => t.trim().to_string(),
            None => {
                let path = self.data_dir.join(crate::server::auth::ADMIN_TOKEN_FILE);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ClientError::Config(format!(
                        "cannot read {}: {e}; start stockd in this folder first, or pass --token / PERPETUA_TOKEN",
                        path.display()
                    ))
                })?;
                text.trim().to_string()
            }
        };
        let mut config = ClientConfig::new(&self.server, ca_pem, token);
        config.server_name = self.server_name.clone();
        Ok(config)
    }

    /// Connects with these flags.
    pub async fn connect(&self) -> Result<super::Client, ClientError> {
        super::Client::connect(self.config()?).await
    }
}
