//! Container log lines (pure; fuzzed): the CRI format Kubernetes runtimes write, Docker's
//! json-file format, and the pod a `/var/log/pods` path belongs to.
//!
//! ```text
//! cri          2024-05-01T10:00:00.123456789Z stdout F the message      (P: continued)
//! docker_json  {"log":"the message\n","stream":"stdout","time":"2024-05-01T10:00:00.1Z"}
//!              (a "log" without the final \n is continued by the next line)
//! pods path    /var/log/pods/NAMESPACE_POD_UID/CONTAINER/RESTART.log
//! ```

/// One container log line, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLine<'a> {
    pub time: &'a [u8],
    pub stream: &'a [u8],
    /// Continued by the next line (CRI `P`, Docker `log` without its newline).
    pub partial: bool,
    pub message: std::borrow::Cow<'a, [u8]>,
}

/// A CRI line; `None` when it is not one.
pub fn cri(line: &[u8]) -> Option<ContainerLine<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = parts.next().filter(|t| !t.is_empty())?;
    let stream = parts
        .next()
        .filter(|s| *s == b"stdout" || *s == b"stderr")?;
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let message = parts.next().unwrap_or_default();
    Some(ContainerLine {
        time,
        stream,
        partial,
        message: std::borrow::Cow::Borrowed(message),
    })
}

/// A Docker json-file line; `None` when it is not one.
pub fn docker_json(line: &[u8]) -> Option<ContainerLine<'_>> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        log: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        stream: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        time: std::borrow::Cow<'a, str>,
    }
    let parsed: Line<'_> = serde_json::from_slice(line).ok()?;
    let stream = find_str(line, &parsed.stream);
    let time = find_str(line, &parsed.time);
    let (message, partial) = match parsed.log.strip_suffix('\n') {
        Some(m) => (m.as_bytes().to_vec(), false),
        None => (parsed.log.as_bytes().to_vec(), true),
    };
    Some(ContainerLine {
        time,
        stream,
        partial,
        message: std::borrow::Cow::Owned(message),
    })
}

/// `value` as a slice of `line` (plain values appear verbatim), or empty.
fn find_str<'a>(line: &'a [u8], value: &str) -> &'a [u8] {
    if value.is_empty() {
        return &[];
    }
    memchr::memmem::find(line, value.as_bytes())
        .map(|at| &line[at..at + value.len()])
        .unwrap_or_default()
}

/// The pod a `…/var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log` path belongs to (the
/// directory may be mounted under another root, as DaemonSets often do: `/host/var/log/pods`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod<'a> {
    pub namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub container_name: &'a str,
}

pub fn pod_of(path: &str) -> Option<Pod<'_>> {
    const PODS: &str = "/var/log/pods/";
    let rest = &path[path.rfind(PODS)? + PODS.len()..];
    let mut parts = rest.split('/');
    let (pod_dir, container) = (parts.next()?, parts.next()?);
    parts.next().filter(|f| f.ends_with(".log"))?;
    if parts.next().is_some() {
        return None;
    }
    // The namespace and pod name never contain '_' (DNS labels); the UID is last.
    let (namespace, rest) = pod_dir.split_once('_')?;
    let (pod_name, pod_uid) = rest.rsplit_once('_')?;
    if [namespace, pod_name, pod_uid, container]
        .iter()
        .any(|s| s.is_empty())
    {
        return None;
    }
    Some(Pod {
        namespace,
        pod_name,
        pod_uid,
        container_name: container,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines() {
        let l = cri(b"2024-05-01T10:00:00.123456789Z stdout F hello world").unwrap();
        assert_eq!(
            (l.time, l.stream, l.partial),
            (
                &b"2024-05-01T10:00:00.123456789Z"[..],
                &b"stdout"[..],
                false
            )
        );
        assert_eq!(&l.message[..], b"hello world");
        let p = cri(b"2024-05-01T10:00:00Z stderr P part").unwrap();
        assert!(p.partial);
        assert_eq!(
            &cri(b"2024-05-01T10:00:00Z stdout F").unwrap().message[..],
            b""
        );
        assert!(cri(b"not a cri line").is_none());
        assert!(cri(b"2024 stdout X m").is_none());
    }

    #[test]
    fn docker_lines() {
        let l = docker_json(
            br#"{"log":"hello \"x\"\n","stream":"stdout","time":"2024-05-01T10:00:00.1Z"}"#,
        )
        .unwrap();
        assert_eq!(&l.message[..], b"hello \"x\"");
        assert_eq!(
            (l.stream, l.time, l.partial),
            (&b"stdout"[..], &b"2024-05-01T10:00:00.1Z"[..], false)
        );
        assert!(
            docker_json(br#"{"log":"part","stream":"stderr"}"#)
                .unwrap()
                .partial
        );
        assert!(docker_json(b"plain text").is_none());
    }

    #[test]
    fn pods_from_paths() {
        let p = pod_of(
            "/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0f1e2d3c-4b5a/coredns/0.log",
        )
        .unwrap();
        assert_eq!(
            p,
            Pod {
                namespace: "kube-system",
                pod_name: "coredns-5d78c9869d-abcde",
                pod_uid: "0f1e2d3c-4b5a",
                container_name: "coredns"
            }
        );
        assert!(pod_of("/var/log/app/x.log").is_none());
        assert_eq!(
            pod_of("/host/var/log/pods/ns_p_u/c/1.log")
                .unwrap()
                .namespace,
            "ns"
        );
        assert!(pod_of("/var/log/pods/bad/c/0.log").is_none());
    }
}
