//! Resolving the container's user and groups from the image's /etc/passwd and
//! /etc/group, the way Kubernetes expects (Docker's long-standing rules).

use crate::error::{Error, Result};

/// An /etc/passwd entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
}

/// An /etc/group entry.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// gid.
    pub gid: u32,
    /// Member user names.
    pub members: Vec<String>,
}

/// Parses /etc/passwd text, skipping malformed lines.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// Parses /etc/group text, skipping malformed lines.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// What the process runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups, primary gid first, no duplicates.
    pub additional_gids: Vec<u32>,
    /// Groups that only the image's /etc/group added (Merge policy): what
    /// Strict would take away.
    pub implicit_gids: Vec<u32>,
}

/// Inputs to [`resolve`].
#[derive(Debug, Default)]
pub struct UserRequest<'a> {
    /// CRI run_as_user.
    pub run_as_user: Option<i64>,
    /// CRI run_as_username.
    pub run_as_username: &'a str,
    /// CRI run_as_group.
    pub run_as_group: Option<i64>,
    /// CRI supplemental_groups.
    pub supplemental_groups: &'a [i64],
    /// Strict policy: never add groups from the image's /etc/group.
    pub strict_groups: bool,
    /// Image USER.
    pub image_user: &'a str,
}

fn id_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidArgument(format!("{what} {v} is out of range")))
}

/// Works out uid, gid and groups. `passwd`/`group` are the image's files.
pub fn resolve(req: &UserRequest, passwd: &[PasswdEntry], group: &[GroupEntry]) -> Result<Identity> {
    if req.run_as_group.is_some()
        && req.run_as_user.is_none()
        && req.run_as_username.is_empty()
        && req.image_user.is_empty()
    {
        return Err(Error::InvalidArgument(
            "run_as_group is set but no user is (run_as_user, run_as_username or image USER)".into(),
        ));
    }
    // The user part and the optional group part of the image's USER.
    let (image_u, image_g) = match req.image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (req.image_user, None),
    };
    let by_name = |n: &str| passwd.iter().find(|p| p.name == n);
    let (uid, name, passwd_gid) = if let Some(u) = req.run_as_user {
        let uid = id_u32(u, "run_as_user")?;
        let e = passwd.iter().find(|p| p.uid == uid);
        (uid, e.map(|e| e.name.clone()), e.map(|e| e.gid))
    } else if !req.run_as_username.is_empty() {
        let e = by_name(req.run_as_username).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "user {:?} not found in the image's /etc/passwd",
                req.run_as_username
            ))
        })?;
        (e.uid, Some(e.name.clone()), Some(e.gid))
    } else if image_u.is_empty() {
        (0, Some("root".to_string()), Some(0))
    } else if let Ok(uid) = image_u.parse::<u32>() {
        let e = passwd.iter().find(|p| p.uid == uid);
        (uid, e.map(|e| e.name.clone()), e.map(|e| e.gid))
    } else {
        let e = by_name(image_u).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "image USER {image_u:?} not found in the image's /etc/passwd"
            ))
        })?;
        (e.uid, Some(e.name.clone()), Some(e.gid))
    };
    // The image's group part applies only when the user came from the image too.
    let image_user_used = req.run_as_user.is_none() && req.run_as_username.is_empty();
    let gid = if let Some(g) = req.run_as_group {
        id_u32(g, "run_as_group")?
    } else if let (true, Some(g)) = (image_user_used, image_g) {
        match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| {
                Error::InvalidArgument(format!("image group {g:?} not found in /etc/group"))
            })?,
        }
    } else {
        passwd_gid.unwrap_or(0)
    };
    let mut gids = vec![gid];
    for g in req.supplemental_groups {
        let g = id_u32(*g, "supplemental group")?;
        if !gids.contains(&g) {
            gids.push(g);
        }
    }
    let explicit = gids.len();
    if !req.strict_groups {
        if let Some(n) = &name {
            for e in group.iter().filter(|e| e.members.iter().any(|m| m == n)) {
                if !gids.contains(&e.gid) {
                    gids.push(e.gid);
                }
            }
        }
    }
    let implicit_gids = gids[explicit..].to_vec();
    Ok(Identity {
        uid,
        gid,
        additional_gids: gids,
        implicit_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ngroup-defined-in-image:x:50000:user-defined-in-image\n";

    fn run(req: UserRequest) -> Result<Identity> {
        resolve(&req, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn merge_adds_image_groups_strict_does_not() {
        let base = || UserRequest {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            supplemental_groups: &[4000],
            ..Default::default()
        };
        let merged = run(base()).unwrap();
        assert_eq!((merged.uid, merged.gid), (1000, 3000));
        assert_eq!(merged.additional_gids, vec![3000, 4000, 50000]);
        assert_eq!(merged.implicit_gids, vec![50000], "what Strict would drop");
        let strict = run(UserRequest {
            strict_groups: true,
            ..base()
        })
        .unwrap();
        assert_eq!(strict.additional_gids, vec![3000, 4000]);
        assert!(strict.implicit_gids.is_empty());
        // An image group the request names anyway is not implicit.
        let named = run(UserRequest {
            supplemental_groups: &[4000, 50000],
            ..base()
        })
        .unwrap();
        assert!(named.implicit_gids.is_empty());
    }

    #[test]
    fn primary_gid_from_passwd_is_always_listed() {
        let id = run(UserRequest {
            run_as_user: Some(1000),
            supplemental_groups: &[1234],
            strict_groups: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (id.uid, id.gid, id.additional_gids.clone()),
            (1000, 1000, vec![1000, 1234])
        );
    }

    #[test]
    fn image_user_forms() {
        assert_eq!(run(UserRequest::default()).unwrap().uid, 0);
        let id = run(UserRequest {
            image_user: "user-defined-in-image",
            ..Default::default()
        })
        .unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        let id = run(UserRequest {
            image_user: "1000:50000",
            ..Default::default()
        })
        .unwrap();
        assert_eq!((id.uid, id.gid), (1000, 50000));
        let id = run(UserRequest {
            image_user: "4321",
            ..Default::default()
        })
        .unwrap();
        assert_eq!((id.uid, id.gid, id.additional_gids), (4321, 0, vec![0]));
        let id = run(UserRequest {
            image_user: "root:group-defined-in-image",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(id.gid, 50000);
        assert!(run(UserRequest {
            image_user: "nobody-here",
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn run_as_group_needs_a_user_and_names_resolve() {
        assert!(run(UserRequest {
            run_as_group: Some(5),
            ..Default::default()
        })
        .is_err());
        let id = run(UserRequest {
            run_as_username: "user-defined-in-image",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(id.uid, 1000);
        assert!(run(UserRequest {
            run_as_username: "ghost",
            ..Default::default()
        })
        .is_err());
        assert!(run(UserRequest {
            run_as_user: Some(-1),
            ..Default::default()
        })
        .is_err());
    }
}
