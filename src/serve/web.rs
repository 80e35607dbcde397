//! The web page at `/`: a server-rendered wizard like factory.talos.dev's. Pick the
//! Talos version, platform, architecture, SecureBoot, official extensions (from that
//! version's catalog), extra kernel arguments and META; the form POSTs to
//! `/ui/schematic`, which creates the schematic through the same code as
//! `POST /schematics` and redirects (303) to a GET-able result page
//! `/ui/schematic/:id?version=..&platform=..&arch=..[&secureboot=1]` with the schematic
//! ID, its YAML, the download links of each asset, the PXE URL and the installer image
//! reference. Plain HTML forms, no JavaScript needed: changing the version re-renders
//! the page (a GET of `/` with the choices so far) so the extension list is that
//! version's. Every dynamic text is HTML-escaped.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::routes::{load_schematic, store_schematic};
use super::{AppState, ServeError};

/// Platforms offered, with their label and the disk image file the factory names
/// (`<platform>-<arch>[-secureboot].<suffix>`).
const PLATFORMS: &[(&str, &str, &str)] = &[
    ("metal", "Bare metal", "raw.zst"),
    ("aws", "Amazon Web Services (AWS)", "raw.zst"),
    ("gcp", "Google Cloud (GCP)", "raw.tar.gz"),
    ("azure", "Microsoft Azure", "vhd.zst"),
    ("digital-ocean", "DigitalOcean", "raw.gz"),
    ("hcloud", "Hetzner Cloud", "raw.zst"),
    ("openstack", "OpenStack", "raw.zst"),
    ("nocloud", "Nocloud", "raw.zst"),
    ("vultr", "Vultr", "raw.zst"),
    ("oracle", "Oracle Cloud", "qcow2.zst"),
    ("exoscale", "Exoscale", "qcow2.zst"),
    ("akamai", "Akamai", "raw.gz"),
    ("upcloud", "UpCloud", "raw.zst"),
    ("scaleway", "Scaleway", "raw.zst"),
    ("opennebula", "OpenNebula", "raw.zst"),
    ("cloudstack", "Apache CloudStack", "raw.zst"),
];
const ARCHES: &[&str] = &["amd64", "arm64"];

/// The page's routes, merged into the service's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/schematic", post(create))
        .route("/ui/schematic/{id}", get(result))
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` pairs, in order (repeated names kept).
fn form_pairs(text: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The wizard's choices, from a query string or a form body.
#[derive(Debug, Default, Clone)]
struct Choices {
    version: String,
    platform: String,
    arch: String,
    secureboot: bool,
    well_known_certs: bool,
    extensions: Vec<String>,
    extra_args: String,
    meta: String,
}

impl Choices {
    fn from_pairs(pairs: &[(String, String)]) -> Choices {
        let mut c = Choices::default();
        for (k, v) in pairs {
            match k.as_str() {
                "version" => c.version = v.clone(),
                "platform" => c.platform = v.clone(),
                "arch" => c.arch = v.clone(),
                "secureboot" => c.secureboot = !v.is_empty() && v != "0",
                "well_known_certs" => c.well_known_certs = !v.is_empty() && v != "0",
                "ext" => c.extensions.push(v.clone()),
                "extra_args" => c.extra_args = v.clone(),
                "meta" => c.meta = v.clone(),
                _ => {}
            }
        }
        if !PLATFORMS.iter().any(|p| p.0 == c.platform) {
            c.platform = "metal".into();
        }
        if !ARCHES.contains(&c.arch.as_str()) {
            c.arch = "amd64".into();
        }
        c
    }

    /// The schematic body these choices stand for (JSON, which the schematic parser
    /// reads as YAML like the factory): extensions sorted as the factory's UI does.
    fn schematic_body(&self) -> Result<String, ServeError> {
        let mut custom = serde_json::Map::new();
        let args: Vec<&str> = self.extra_args.split_whitespace().collect();
        if !args.is_empty() {
            custom.insert("extraKernelArgs".into(), args.into());
        }
        let mut meta = Vec::new();
        for line in self.meta.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').ok_or_else(|| {
                ServeError::bad_request(format!("META line {line:?} is not KEY=VALUE"))
            })?;
            let k = k.trim();
            let key = match k.strip_prefix("0x").or_else(|| k.strip_prefix("0X")) {
                Some(h) => u8::from_str_radix(h, 16),
                None => k.parse::<u8>(),
            }
            .map_err(|_| ServeError::bad_request(format!("META key {k:?} is not 0..255")))?;
            meta.push(serde_json::json!({"key": key, "value": v}));
        }
        if !meta.is_empty() {
            custom.insert("meta".into(), meta.into());
        }
        let mut exts = self.extensions.clone();
        exts.sort();
        exts.dedup();
        if !exts.is_empty() {
            custom.insert(
                "systemExtensions".into(),
                serde_json::json!({"officialExtensions": exts}),
            );
        }
        if self.secureboot && self.well_known_certs {
            custom.insert(
                "secureboot".into(),
                serde_json::json!({"includeWellKnownCertificates": true}),
            );
        }
        Ok(serde_json::json!({"customization": custom}).to_string())
    }

    fn query(&self) -> String {
        let mut q = format!(
            "version={}&platform={}&arch={}",
            enc(&self.version),
            enc(&self.platform),
            enc(&self.arch)
        );
        if self.secureboot {
            q.push_str("&secureboot=1");
        }
        q
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.6rem}fieldset{border:1px solid #ccc;border-radius:6px;margin:1rem 0;padding:.8rem 1rem}\
legend{font-weight:600}label{display:block;margin:.25rem 0}textarea{width:100%;font-family:monospace}\
code,pre{background:#f4f4f4;padding:.1rem .3rem;border-radius:4px}pre{padding:.6rem;overflow:auto}\
button{font-size:1rem;padding:.4rem 1rem}.muted{color:#666;font-size:.9rem}td{padding:.2rem .6rem}td a{word-break:break-all}";

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        esc(title)
    ))
}

async fn index(Extract(state): Extract<AppState>, RawQuery(q): RawQuery) -> Response {
    let pairs = form_pairs(q.as_deref().unwrap_or(""));
    let mut c = Choices::from_pairs(&pairs);
    let versions = state.versions();
    if !versions.contains(&c.version) {
        c.version = versions.last().cloned().unwrap_or_default();
    }
    let mut h = String::from("<h1>Talos Linux Image Factory</h1>");
    if versions.is_empty() {
        h.push_str("<p>No Talos versions are configured on this service.</p>");
        return page("Image Factory", &h).into_response();
    }
    h.push_str(
        "<p class=\"muted\">Choose what the image should hold; the next page gives the \
schematic ID and every download link.</p><form method=\"post\" action=\"/ui/schematic\">",
    );
    // Version: changing it re-renders the page for that version's catalog.
    h.push_str("<fieldset><legend>Talos version</legend><select name=\"version\" id=\"version\">");
    for v in versions.iter().rev() {
        let sel = if *v == c.version { " selected" } else { "" };
        h.push_str(&format!("<option value=\"{0}\"{sel}>{0}</option>", esc(v)));
    }
    h.push_str(
        "</select> <button type=\"submit\" formmethod=\"get\" formaction=\"/\" id=\"change-version\">\
Show this version's extensions</button></fieldset>",
    );
    h.push_str("<fieldset><legend>Platform</legend>");
    for (name, label, _) in PLATFORMS {
        let chk = if *name == c.platform { " checked" } else { "" };
        h.push_str(&format!(
            "<label><input type=\"radio\" name=\"platform\" value=\"{}\"{chk}> {}</label>",
            esc(name),
            esc(label)
        ));
    }
    // Only what this service can build: the architectures with inputs for the version,
    // SecureBoot only with keys.
    let prepared = state.prepared_version(&c.version).await;
    let buildable = |a: &str| match &prepared {
        Ok(v) => state
            .inputs
            .root()
            .join(v)
            .join(a)
            .join("vmlinuz")
            .is_file(),
        Err(_) => false,
    };
    if !buildable(&c.arch)
        && let Some(a) = ARCHES.iter().find(|a| buildable(a))
    {
        c.arch = a.to_string();
    }
    h.push_str("</fieldset><fieldset><legend>Architecture</legend>");
    for a in ARCHES {
        let chk = if *a == c.arch { " checked" } else { "" };
        let (off, note) = match buildable(a) {
            true => ("", ""),
            false => (
                " disabled",
                " <span class=\"muted\">(no inputs for this version on this service)</span>",
            ),
        };
        h.push_str(&format!(
            "<label><input type=\"radio\" name=\"arch\" value=\"{a}\"{chk}{off}> {a}{note}</label>"
        ));
    }
    let keys = state.config.secureboot_dir.is_some();
    let sb = if c.secureboot && keys { " checked" } else { "" };
    let wk = if c.well_known_certs { " checked" } else { "" };
    let (off, note) = match keys {
        true => ("", ""),
        false => (
            " disabled",
            " <span class=\"muted\">(this service runs without --secureboot-dir)</span>",
        ),
    };
    h.push_str(&format!(
        "</fieldset><fieldset><legend>SecureBoot</legend>\
<label><input type=\"checkbox\" name=\"secureboot\" value=\"1\"{sb}{off}> SecureBoot images (signed UKI, enrolls the keys){note}</label>\
<label><input type=\"checkbox\" name=\"well_known_certs\" value=\"1\"{wk}{off}> Include well-known UEFI certificates in the enrolled db</label>\
</fieldset>"
    ));
    h.push_str("<fieldset><legend>System extensions</legend>");
    let cat = match prepared.and_then(|v| state.inputs.catalog(&v)) {
        Ok(cat) => cat,
        Err(e) => {
            h.push_str(&format!("<p class=\"muted\">{}</p>", esc(&e.message)));
            Vec::new()
        }
    };
    if cat.is_empty() {
        h.push_str(&format!(
            "<p class=\"muted\">No official extensions for {}.</p>",
            esc(&c.version)
        ));
    }
    for e in &cat {
        let chk = if c.extensions.contains(&e.name) {
            " checked"
        } else {
            ""
        };
        let desc = if e.description.is_empty() {
            String::new()
        } else {
            format!(" <span class=\"muted\">— {}</span>", esc(&e.description))
        };
        h.push_str(&format!(
            "<label><input type=\"checkbox\" name=\"ext\" value=\"{0}\"{chk}> {0}{desc}</label>",
            esc(&e.name)
        ));
    }
    h.push_str(&format!(
        "</fieldset><fieldset><legend>Customization</legend>\
<label for=\"extra_args\">Extra kernel arguments (separated by spaces)</label>\
<textarea name=\"extra_args\" id=\"extra_args\" rows=\"2\">{}</textarea>\
<label for=\"meta\">Initial META values, one <code>KEY=VALUE</code> a line (key 0..255, e.g. <code>0xa={{\"externalIPs\":[]}}</code>)</label>\
<textarea name=\"meta\" id=\"meta\" rows=\"3\">{}</textarea></fieldset>\
<button type=\"submit\" id=\"submit\">Create schematic</button></form>",
        esc(&c.extra_args),
        esc(&c.meta)
    ));
    page("Image Factory", &h).into_response()
}

async fn create(Extract(state): Extract<AppState>, body: Bytes) -> Response {
    let c = Choices::from_pairs(&form_pairs(&String::from_utf8_lossy(&body)));
    let outcome = async {
        let version = state.version(&c.version)?;
        let json = c.schematic_body()?;
        let (id, _) = store_schematic(&state, json.as_bytes(), Some("application/json")).await?;
        Ok::<_, ServeError>((id, version))
    }
    .await;
    match outcome {
        Ok((id, _)) => (
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                format!("/ui/schematic/{id}?{}", c.query()),
            )],
        )
            .into_response(),
        Err(e) => error_page(e),
    }
}

fn error_page(e: ServeError) -> Response {
    let body = format!(
        "<h1>Could not create the schematic</h1><p id=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
        esc(&e.message)
    );
    (e.status, page("Error", &body)).into_response()
}

async fn result(
    Extract(state): Extract<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let c = Choices::from_pairs(&form_pairs(q.as_deref().unwrap_or("")));
    let version = match state.version(&c.version) {
        Ok(v) => v,
        Err(e) => return error_page(e),
    };
    let yaml = match load_schematic(&state, &id).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return error_page(e),
    };
    let ext = state.config.external_url.trim_end_matches('/').to_string();
    let host = ext
        .split_once("://")
        .map_or(ext.as_str(), |(_, h)| h)
        .to_string();
    let (p, a) = (c.platform.as_str(), c.arch.as_str());
    let sb = if c.secureboot { "-secureboot" } else { "" };
    let suffix = PLATFORMS
        .iter()
        .find(|x| x.0 == p)
        .map_or("raw.zst", |x| x.2);
    let mut assets: Vec<(String, String)> = Vec::new();
    if p == "metal" {
        assets.push(("ISO".into(), format!("metal-{a}{sb}.iso")));
    }
    assets.push(("Disk image".into(), format!("{p}-{a}{sb}.{suffix}")));
    if c.secureboot {
        assets.push(("UKI".into(), format!("{p}-{a}-secureboot-uki.efi")));
    }
    assets.push(("Kernel".into(), format!("kernel-{a}")));
    assets.push(("Kernel command line".into(), format!("cmdline-{p}-{a}{sb}")));
    assets.push(("Initramfs".into(), format!("initramfs-{a}.xz")));
    assets.push((
        "Installer (tarball)".into(),
        format!("installer-{a}{sb}.tar"),
    ));
    let installer = format!("{host}/installer{sb}/{id}:{version}");
    let pxe = format!("{ext}/pxe/{id}/{version}/{p}-{a}{sb}");
    let mut h = format!(
        "<h1>Schematic ready</h1><p>Talos {} for {} ({}){}</p>\
<p>Schematic ID: <code id=\"schematic-id\">{}</code></p><pre id=\"schematic-yaml\">{}</pre>\
<h2>Downloads</h2><table id=\"downloads\">",
        esc(&version),
        esc(PLATFORMS.iter().find(|x| x.0 == p).map_or(p, |x| x.1)),
        esc(a),
        if c.secureboot { ", SecureBoot" } else { "" },
        esc(&id),
        esc(&yaml)
    );
    for (label, file) in &assets {
        let url = format!("{ext}/image/{}/{}/{}", enc(&id), enc(&version), enc(file));
        h.push_str(&format!(
            "<tr><td>{}</td><td><a href=\"{}\">{}</a></td></tr>",
            esc(label),
            esc(&url),
            esc(&url)
        ));
    }
    h.push_str(&format!(
        "</table><h2>PXE boot (iPXE script URL)</h2><p><code id=\"pxe-url\">{}</code></p>\
<h2>Installer image</h2><p>For a new install and for upgrades (<code>talosctl upgrade --image</code>):</p>\
<p><code id=\"installer-image\">{}</code></p>\
<p><a href=\"/?{}\">Start over with these choices</a></p>",
        esc(&pxe),
        esc(&installer),
        esc(&c.query())
    ));
    page(&format!("Schematic {id}"), &h).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_form_decoding() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        let p = form_pairs("ext=a%2Fb&ext=c&extra_args=console%3DttyS0+quiet&bad=%zz&end=%4");
        assert_eq!(p[0], ("ext".into(), "a/b".into()));
        assert_eq!(p[2].1, "console=ttyS0 quiet");
        assert_eq!(p[3].1, "%zz");
        assert_eq!(p[4].1, "%4");
    }

    #[test]
    fn choices_make_the_schematic_body() {
        let c = Choices::from_pairs(&form_pairs(
            "version=v1.9.2&platform=metal&arch=arm64&ext=z%2Fb&ext=a%2Fc&extra_args=+a++b&meta=0xa%3Dx%3Dy%0D%0A10%3Dz",
        ));
        let body = c.schematic_body().unwrap();
        let s = crate::schematic::parse(body.as_bytes(), None).unwrap();
        assert_eq!(s.extra_kernel_args(), ["a", "b"]);
        assert_eq!(s.official_extensions(), ["a/c", "z/b"]);
        assert_eq!(
            s.meta(),
            vec![(10, "x=y".to_string()), (10, "z".to_string())]
        );
        let bad = Choices::from_pairs(&form_pairs("meta=256%3Dx"));
        assert!(bad.schematic_body().is_err());
    }
}
