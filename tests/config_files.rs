//! Every file shipped in `config/` must load, and `config/callgate.toml` must spell out exactly the defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use callgate::config::Config;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// `section.key` for every key of a TOML document with one level of sections.
fn key_paths(text: &str) -> BTreeSet<String> {
    let table: toml::Table = text.parse().expect("valid TOML");
    table
        .iter()
        .flat_map(|(section, keys)| {
            let keys = keys.as_table().expect("every top-level item is a section");
            keys.keys().map(move |key| format!("{section}.{key}"))
        })
        .collect()
}

#[test]
fn every_shipped_config_file_loads() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("readable directory entry").path();
        if path.is_file() {
            if let Err(error) = Config::load(Some(&path)) {
                panic!("{error}");
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 1, "config/ holds no files");
}

#[test]
fn shipped_callgate_toml_is_exactly_the_defaults() {
    let path = config_dir().join("callgate.toml");
    let config = Config::load_with_env(Some(&path), []).expect("config/callgate.toml loads");
    assert_eq!(config, Config::default());
}

#[test]
fn shipped_callgate_toml_lists_every_key() {
    let path = config_dir().join("callgate.toml");
    let shipped = key_paths(&std::fs::read_to_string(&path).expect("config/callgate.toml is readable"));
    let all = key_paths(&Config::default().to_toml());
    let missing: Vec<_> = all.difference(&shipped).collect();
    assert!(missing.is_empty(), "config/callgate.toml lacks {missing:?}");
}
