//! ImageFolder trees (torchvision's layout): one subfolder per class, its images anywhere below
//! it; labels are the sorted class names' positions.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::decode::decode;
use super::resize::{crop_resize, hwc_to_chw, to_channels};
use crate::error::{Error, IoContext, Result};

/// File extensions taken as images (case-insensitive); the content decides the decoder.
const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

pub struct Listing {
    pub root: PathBuf,
    /// Sorted subfolder names; label i is `classes[i]`.
    pub classes: Vec<String>,
    /// Every image with its label, by class, then by path.
    pub files: Vec<(PathBuf, u32)>,
}

impl Listing {
    /// What a packed copy of this folder depends on: every file's path, size and modification
    /// time, so a cache made from it is rebuilt when an image is added, removed or replaced.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        for (path, label) in &self.files {
            let meta = std::fs::metadata(path).at(path)?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let rel = path.strip_prefix(&self.root).unwrap_or(path);
            h.update(format!(
                "{}\0{label}\0{}\0{mtime}\n",
                rel.display(),
                meta.len()
            ));
        }
        Ok(super::packed::hex(&h.finalize()))
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Image files below `dir`, recursively (symlinks followed), in torchvision's order: folders
/// sorted by path (as strings), files sorted by name within each.
fn images_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut folders = vec![dir.to_path_buf()];
    let mut k = 0;
    let mut files_of: Vec<(String, Vec<PathBuf>)> = Vec::new();
    while k < folders.len() {
        let d = folders[k].clone();
        k += 1;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&d).at(&d)? {
            let p = entry.at(&d)?.path();
            if hidden(&p) {
                continue;
            }
            let meta = std::fs::metadata(&p).at(&p)?;
            if meta.is_dir() {
                folders.push(p);
            } else if meta.is_file() && is_image(&p) {
                files.push(p);
            }
        }
        files.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
        files_of.push((d.to_string_lossy().into_owned(), files));
    }
    files_of.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(files_of.into_iter().flat_map(|(_, f)| f));
    Ok(())
}

/// Lists an ImageFolder tree. An empty folder, a folder without class subfolders and a class
/// subfolder without images are errors that name the folder.
pub fn scan(root: &Path) -> Result<Listing> {
    let err = |path: &Path, msg: String| Error::Data {
        path: path.to_path_buf(),
        msg,
    };
    let mut classes: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(root).at(root)? {
        let path = entry.at(root)?.path();
        if hidden(&path) || !std::fs::metadata(&path).at(&path)?.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| err(&path, "class folder name is not valid UTF-8".into()))?;
        classes.push(name.to_string());
    }
    if classes.is_empty() {
        return Err(err(
            root,
            "no class subfolders: an ImageFolder has one subfolder per class with the images inside (root/<class>/<image>.jpg)".into(),
        ));
    }
    classes.sort();
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut found = Vec::new();
        images_below(&dir, &mut found)?;
        if found.is_empty() {
            return Err(err(
                &dir,
                format!(
                    "class folder without images (.jpg, .jpeg or .png): its label would never be seen; remove it or add images ({} classes in {})",
                    classes.len(),
                    root.display()
                ),
            ));
        }
        files.extend(found.into_iter().map(|p| (p, label as u32)));
    }
    Ok(Listing {
        root: root.to_path_buf(),
        classes,
        files,
    })
}

/// Reads, decodes, converts, centre-crops and resizes one image into `out` (CHW, `channels` x
/// `res` x `res`). The error is the file's path and what is wrong with it.
pub fn load_image(
    path: &Path,
    channels: u8,
    res: u32,
    out: &mut [u8],
) -> std::result::Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let img = to_channels(decode(&bytes, path)?, channels);
    hwc_to_chw(&crop_resize(&img, res), channels as usize, out);
    Ok(())
}
