//! The command line containerd gives a shim, read the way Go's `flag` package reads it
//! (`-name value`, `-name=value`, `--name`, flags before the action), for `start` only.
//! Anything this does not fully understand yields `None`, so the Go shim answers it.

use std::ffi::OsString;

/// The flags of a `start` call that decide which shim socket the task joins.
#[derive(Debug, PartialEq, Eq)]
pub struct StartFlags {
    /// The containerd namespace of the task (`-namespace`).
    pub namespace: String,
    /// containerd's gRPC socket (`-address`); part of the shim socket's hash.
    pub address: String,
    /// The task's id (`-id`).
    pub id: String,
}

/// Flags that take a value; containerd 1.6 sends these, and `debug` alone as a boolean.
const VALUE_FLAGS: [&str; 6] = [
    "namespace",
    "address",
    "publish-binary",
    "id",
    "bundle",
    "socket",
];

impl StartFlags {
    /// The flags of `args` (without the program name) if they are a `start` call.
    pub fn parse(args: &[OsString]) -> Option<Self> {
        let mut args = args.iter().map(|a| a.to_str());
        let (mut namespace, mut address, mut id) = (None, None, None);
        let action = loop {
            let arg = args.next()??;
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                break arg;
            };
            if flag.is_empty() || flag.starts_with('-') {
                // "-" is an argument and "--" ends the flags in Go; neither comes from containerd.
                return None;
            }
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (flag, None),
            };
            if name == "debug" {
                continue;
            }
            if !VALUE_FLAGS.contains(&name) {
                return None;
            }
            let value = match inline {
                Some(value) => value.to_string(),
                None => args.next()??.to_string(),
            };
            match name {
                "namespace" => namespace = Some(value),
                "address" => address = Some(value),
                "id" => id = Some(value),
                _ => {}
            }
        };
        if action != "start" {
            return None;
        }
        Some(Self {
            namespace: namespace?,
            address: address?,
            id: id?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn reads_the_start_call_containerd_makes() {
        let got = StartFlags::parse(&args(
            "-namespace skiff-n1 -address /run/containerd/containerd.sock \
             -publish-binary /usr/bin/containerd -debug -id pod-a start",
        ));
        assert_eq!(
            got,
            Some(StartFlags {
                namespace: "skiff-n1".into(),
                address: "/run/containerd/containerd.sock".into(),
                id: "pod-a".into(),
            })
        );
        let inline = StartFlags::parse(&args("--namespace=n -address=/a.sock -id=c start"));
        assert_eq!(inline.map(|f| f.address), Some("/a.sock".into()));
    }

    #[test]
    fn leaves_every_other_call_to_the_go_shim() {
        for line in [
            "-namespace n -address /a.sock -id c delete",
            "-namespace n -address /a.sock -id c",
            "-namespace n -id c start",
            "-v",
            "-namespace n -address /a.sock -id c -unknown x start",
            "-namespace n -address /a.sock -id c -- start",
            "-namespace n -address",
        ] {
            assert_eq!(StartFlags::parse(&args(line)), None, "{line}");
        }
    }
}
