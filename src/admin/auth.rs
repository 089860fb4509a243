//! Who may use the Admin API: the client's network first (`admin.allow`), then its key
//! (`X-API-KEY`, or `?api_key=`), then whether the key's role may use the method.

use std::net::IpAddr;

use crate::config::{AdminConfig, AdminRole};

/// Why a request is refused before it is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key.
    Missing,
    /// A key that is not configured.
    Wrong,
    /// A viewer asked to write.
    ViewerWrite,
}

/// The configured keys and networks.
pub struct Access {
    keys: Vec<(Vec<u8>, AdminRole)>,
    allow: Vec<crate::net::Cidr>,
}

impl Access {
    pub fn new(config: &AdminConfig) -> Access {
        Access {
            keys: config
                .keys
                .iter()
                .map(|k| (k.key.as_bytes().to_vec(), k.role))
                .collect(),
            allow: config.allow_nets.clone(),
        }
    }

    /// Whether a client at `ip` may connect at all (unknown address: no).
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.allow.iter().any(|n| n.contains(ip)))
    }

    /// The role of `key`, comparing in constant time against every configured key so the
    /// answer's timing tells nothing about how much of a key was right.
    pub fn role(&self, key: Option<&str>) -> Option<AdminRole> {
        let key = key?.as_bytes();
        let mut found = None;
        for (k, role) in &self.keys {
            let same = k.len() == key.len() && openssl::memcmp::eq(k, key);
            if same && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }

    /// Checks `key` for `method`.
    pub fn check(&self, key: Option<&str>, method: &http::Method) -> Result<AdminRole, Refusal> {
        let role = match key {
            None | Some("") => return Err(Refusal::Missing),
            k => self.role(k).ok_or(Refusal::Wrong)?,
        };
        // A viewer may only GET, as in APISIX.
        if role == AdminRole::Viewer && *method != http::Method::GET {
            return Err(Refusal::ViewerWrite);
        }
        Ok(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminKey;

    #[test]
    fn keys_roles_and_networks() {
        let config = AdminConfig {
            listen: "127.0.0.1:9180".into(),
            keys: vec![
                AdminKey {
                    name: "a".into(),
                    key: "admin-key".into(),
                    role: AdminRole::Admin,
                },
                AdminKey {
                    name: "v".into(),
                    key: "viewer-key".into(),
                    role: AdminRole::Viewer,
                },
            ],
            allow: vec![],
            allow_nets: vec![crate::net::Cidr::parse("127.0.0.0/24").unwrap()],
        };
        let a = Access::new(&config);
        assert!(a.allows(Some("127.0.0.9".parse().unwrap())));
        assert!(!a.allows(Some("10.0.0.1".parse().unwrap())));
        assert!(!a.allows(None));
        assert_eq!(a.check(None, &http::Method::GET), Err(Refusal::Missing));
        assert_eq!(
            a.check(Some("admin-ke"), &http::Method::GET),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            a.check(Some("viewer-key"), &http::Method::HEAD),
            Err(Refusal::ViewerWrite)
        );
        assert_eq!(
            a.check(Some("admin-key"), &http::Method::PUT),
            Ok(AdminRole::Admin)
        );
        assert_eq!(
            a.check(Some("viewer-key"), &http::Method::GET),
            Ok(AdminRole::Viewer)
        );
        assert_eq!(
            a.check(Some("viewer-key"), &http::Method::DELETE),
            Err(Refusal::ViewerWrite)
        );
    }
}
