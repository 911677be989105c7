//! Kubelet and kube-proxy command lines: splitting argv into flags the way
//! spf13/pflag (which both use) reads them.
//!
//! pflag accepts `--name=value`, `--name value` and, for boolean flags, a
//! bare `--name` meaning true. A boolean flag never takes the next word as
//! its value (`--anonymous-auth false` is `true` plus a stray argument), so
//! the parser must know which flags are boolean. The last occurrence of a
//! flag wins. Every flag keeps the origin of the word it came from, so the
//! evidence can say which file, line or process set it.

/// One word of a command line and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub text: String,
    /// `/proc/<pid>/cmdline`, `path:line`, or `path:line ($VAR from path:line)`.
    pub origin: String,
}

impl Arg {
    pub fn new(text: impl Into<String>, origin: impl Into<String>) -> Self {
        Arg { text: text.into(), origin: origin.into() }
    }
}

/// One flag occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Name without dashes (`anonymous-auth`).
    pub name: String,
    /// The value; a bare boolean flag has the value `true`.
    pub value: String,
    pub origin: String,
}

/// The flags of one command line, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub flags: Vec<Flag>,
    /// Words that are not flags (the binary itself is not included).
    pub positional: Vec<Arg>,
}

impl Flags {
    /// The effective occurrence of a flag (pflag: the last one wins).
    pub fn get(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().rev().find(|f| f.name == name)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(|f| f.value.as_str())
    }
}

/// Boolean flags of the kubelet and kube-proxy: they take no separate value word.
pub const BOOL_FLAGS: &[&str] = &[
    "anonymous-auth",
    "authentication-token-webhook",
    "make-iptables-util-chains",
    "rotate-certificates",
    "rotate-server-certificates",
    "seccomp-default",
    "protect-kernel-defaults",
    "fail-swap-on",
    "register-node",
    "register-schedulable",
    "enable-server",
    "enable-debugging-handlers",
    "enable-controller-attach-detach",
    "cgroups-per-qos",
    "serialize-image-pulls",
    "exit-on-lock-contention",
    "keep-terminated-pod-volumes",
    "kernel-memcg-notification",
    "local-storage-capacity-isolation",
    "logtostderr",
    "alsologtostderr",
    "log-flush-frequency",
    "help",
    "version",
    "masquerade-all",
    "cleanup",
    "bind-address-hard-fail",
    "profiling",
    "enable-cadvisor-json-endpoints",
    "allow-privileged",
    "one-output",
    "skip-headers",
    "skip-log-headers",
    "add-dir-header",
];

/// Split a command line (without the program) into flags.
pub fn parse_flags(args: &[Arg]) -> Flags {
    let mut out = Flags::default();
    let mut i = 0usize;
    let mut only_positional = false;
    while let Some(arg) = args.get(i) {
        i += 1;
        let text = arg.text.as_str();
        if only_positional || text == "-" || !text.starts_with('-') {
            out.positional.push(arg.clone());
            continue;
        }
        if text == "--" {
            only_positional = true;
            continue;
        }
        let body = text.trim_start_matches('-');
        if body.is_empty() {
            out.positional.push(arg.clone());
            continue;
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None if BOOL_FLAGS.contains(&body) => (body.to_string(), "true".to_string()),
            None => match args.get(i) {
                Some(next) if !next.text.starts_with('-') || next.text == "-" => {
                    i += 1;
                    (body.to_string(), next.text.clone())
                }
                // A value flag with nothing after it: pflag would refuse to
                // start; keep it with an empty value so the evidence shows it.
                _ => (body.to_string(), String::new()),
            },
        };
        out.flags.push(Flag { name, value, origin: arg.origin.clone() });
    }
    out
}

/// pflag/strconv.ParseBool.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Split `/proc/<pid>/cmdline` (NUL-separated) into words.
pub fn split_cmdline(raw: &[u8], origin: &str) -> Vec<Arg> {
    raw.split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| Arg::new(String::from_utf8_lossy(w).into_owned(), origin))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Arg> {
        words.iter().map(|w| Arg::new(*w, "test")).collect()
    }

    #[test]
    fn forms_of_flags() {
        let f = parse_flags(&args(&[
            "--config=/var/lib/kubelet/config.yaml",
            "--kubeconfig",
            "/etc/kubernetes/kubelet.conf",
            "--anonymous-auth",
            "false",
            "--rotate-certificates",
            "-v=2",
            "--read-only-port=10255",
            "--read-only-port=0",
            "--",
            "--not-a-flag",
        ]));
        assert_eq!(f.value("config"), Some("/var/lib/kubelet/config.yaml"));
        assert_eq!(f.value("kubeconfig"), Some("/etc/kubernetes/kubelet.conf"));
        // A bool flag does not take the next word.
        assert_eq!(f.value("anonymous-auth"), Some("true"));
        assert_eq!(f.positional[0].text, "false");
        assert_eq!(f.value("rotate-certificates"), Some("true"));
        assert_eq!(f.value("v"), Some("2"));
        assert_eq!(f.value("read-only-port"), Some("0"), "last occurrence wins");
        assert_eq!(f.positional[1].text, "--not-a-flag");
    }

    #[test]
    fn value_flag_at_end_and_before_flag() {
        let f = parse_flags(&args(&["--hostname-override", "--config=/c"]));
        assert_eq!(f.value("hostname-override"), Some(""));
        assert_eq!(f.value("config"), Some("/c"));
    }

    #[test]
    fn cmdline_split() {
        let a = split_cmdline(b"/usr/bin/kubelet\x00--config=/x\x00\x00600\x00", "/proc/1/cmdline");
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].text, "--config=/x");
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("no"), None);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(words in proptest::collection::vec("\\PC*", 0..12), raw in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let a: Vec<Arg> = words.iter().map(|w| Arg::new(w.clone(), "p")).collect();
            let _ = parse_flags(&a);
            let _ = split_cmdline(&raw, "p");
        }
    }
}
