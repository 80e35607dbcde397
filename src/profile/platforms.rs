//! The platforms Talos knows, with the kernel arguments each one boots with
//! (Talos `pkg/machinery/platforms`, per architecture).

/// Kernel arguments of each platform, by architecture (`None` = both).
pub const PLATFORM_ARGS: &[(&str, Option<&str>, &str)] = &[
    ("metal", Some("amd64"), "console=tty0"),
    ("metal", Some("arm64"), "console=ttyAMA0 console=tty0"),
    ("aws", None, "console=tty1 console=ttyS0 net.ifnames=0"),
    (
        "azure",
        None,
        "console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1",
    ),
    (
        "gcp",
        None,
        "console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1",
    ),
    (
        "akamai",
        None,
        "console=ttyS0 console=tty0 console=tty1 net.ifnames=0",
    ),
    (
        "digital-ocean",
        None,
        "console=ttyS0 console=tty0 console=tty1 net.ifnames=0",
    ),
    (
        "alibabacloud",
        None,
        "console=tty1 console=ttyS0 net.ifnames=0",
    ),
    (
        "cloudstack",
        None,
        "console=tty1 console=ttyS0 net.ifnames=0",
    ),
    ("exoscale", None, "console=tty1 console=ttyS0 net.ifnames=0"),
    ("hcloud", None, "console=tty1 console=ttyS0 net.ifnames=0"),
    ("nocloud", None, "console=tty1 console=ttyS0 net.ifnames=0"),
    (
        "opennebula",
        None,
        "console=tty1 console=ttyS0 net.ifnames=0",
    ),
    (
        "openstack",
        None,
        "console=tty1 console=ttyS0 net.ifnames=0",
    ),
    (
        "oracle",
        None,
        "console=tty1 console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1",
    ),
    (
        "scaleway",
        None,
        "console=tty1 console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1",
    ),
    ("upcloud", None, "net.ifnames=0"),
    ("vultr", None, "net.ifnames=0"),
    (
        "vmware",
        Some("amd64"),
        "talos.config=guestinfo console=tty0 console=ttyS0 earlyprintk=ttyS0,115200 net.ifnames=0",
    ),
    (
        "vmware",
        Some("arm64"),
        "talos.config=guestinfo console=tty0 console=ttyAMA0 net.ifnames=0",
    ),
    ("equinixMetal", Some("amd64"), "console=ttyS1,115200n8"),
    ("equinixMetal", Some("arm64"), "console=ttyAMA0,115200"),
];

/// Whether `platform` is one Talos knows.
pub fn known_platform(platform: &str) -> bool {
    PLATFORM_ARGS.iter().any(|(p, _, _)| *p == platform)
}
