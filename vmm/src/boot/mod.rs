//! Linux boot: kernel loading, command line and the zero page.

pub mod cmdline;
pub mod elf_map;
pub mod loader;
pub mod params;
