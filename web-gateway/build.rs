//! Embeds the console's built files (`ui/dist/`, committed) into the library, each with its
//! gzip and brotli encodings made here, once, instead of on every request. Without `ui/dist/`
//! the set is empty and the gateway says the console was not built.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "src/precompress.rs"]
#[allow(dead_code)]
mod precompress;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let dist = manifest.join("ui").join("dist");

    // Cargo reruns a build script on every build while a path it watches is missing, so watch the
    // nearest folder that exists: `ui/dist` itself, or its parent so that its appearance (the UI
    // being built, or the UI branch being merged) is noticed.
    let watched = [dist.clone(), manifest.join("ui"), manifest.clone()]
        .into_iter()
        .find(|p| p.exists())
        .expect("the crate's own folder exists");
    println!("cargo:rerun-if-changed={}", watched.display());
    println!("cargo:rerun-if-changed=src/precompress.rs");

    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();

    let mut table = String::from("&[\n");
    for (index, (url_path, file)) in files.iter().enumerate() {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (gzip, brotli) = precompress::encodings(url_path, &bytes);
        let encoded = |suffix: &str, data: Option<Vec<u8>>| match data {
            Some(data) => {
                let path = out.join(format!("asset-{index}.{suffix}"));
                std::fs::write(&path, data).expect("write an encoded asset");
                format!("Some(include_bytes!({:?}))", path.display().to_string())
            }
            None => "None".to_string(),
        };
        writeln!(
            table,
            "    EmbeddedFile {{ path: {url_path:?}, raw: include_bytes!({:?}), gzip: {}, brotli: {}, etag: {:?} }},",
            file.display().to_string(),
            encoded("gz", gzip),
            encoded("br", brotli),
            precompress::etag(&bytes),
        )
        .expect("write to a string");
    }
    table.push(']');
    std::fs::write(out.join("embedded_console.rs"), table).expect("write the embedded table");
}

/// Every file under `dir`, as (`/path/from/root`, file), skipping hidden names (`.gitkeep`).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("read a directory entry");
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            let url: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push((format!("/{}", url.join("/")), path));
        }
    }
}
